"""File and artifact names built from user text never leave their folder (grids, notes, templates, stores)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from workbench.backends import registry
from workbench.backends.base import Backend, Capabilities
from workbench.backends.fake import fake_image
from workbench.errors import SpecError, TemplateError
from workbench.experiments.spec import parse_spec
from workbench.prompts.templates import TemplateLibrary
from workbench.run.runner import run_experiment
from workbench.types import GeneratedImage, GenerationRequest, GenerationResult

HOSTILE = ["../../evil", "/etc/passwd", "..", "a/../../b", "C:\\evil", "~/evil"]


class NotesBackend(Backend):
    """Returns images with notes named by the prompt: the hostile names reach the artifact writer."""

    name = "notes"

    def capabilities(self, model: str) -> Capabilities:
        return Capabilities(seeds=True, max_batch=8)

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [GeneratedImage(request=r, image=fake_image(r), notes={name: "x" for name in HOSTILE},
                               flags=frozenset(HOSTILE)) for r in batch]


@pytest.fixture
def notes_backend():  # type: ignore[no-untyped-def]
    registry.register_backend("notes", NotesBackend)
    yield
    registry._registered.pop("notes", None)
    registry._instances.pop("notes", None)


def every_file(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize("key", ["vary", "options", "variables"])
def test_names_that_become_params_and_files_must_be_plain(key: str) -> None:
    data = {"name": "paths", "prompt": "a {{ x }}", "backend": "fake", "model": "m", "seeds": [1]}
    hostile = {"vary": {"option.../../evil": [1]}, "options": {"../../evil": 1}, "variables": {"a/../b": "c"}}
    with pytest.raises(SpecError, match="not a valid (option )?name"):
        parse_spec({**data, key: hostile[key]})


def test_hostile_experiment_names_write_grids_inside_the_grid_folder(tracking_uri: str, fake_backend,
                                                                     workbench_home: Path) -> None:
    spec = parse_spec({"name": "paths", "prompt": "a cat", "backend": "fake", "model": "m", "seeds": [1],
                       "params": {"width": 16, "height": 16}, "vary": {"guidance": [3]}})
    for name in HOSTILE:
        summary = run_experiment(spec, tracking_uri=tracking_uri, experiment=name, progress=False)
        assert summary.ok and summary.grids, name
        for path in summary.grids:
            assert path.resolve().is_relative_to((workbench_home / "grids").resolve()), (name, path)


def test_hostile_note_names_stay_inside_the_runs_artifact_folder(tracking_uri: str, notes_backend,
                                                                 tmp_path: Path) -> None:
    spec = parse_spec({"name": "notes", "prompt": "a cat", "backend": "notes", "model": "m", "seeds": [1],
                       "params": {"width": 16, "height": 16}})
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g")
    assert summary.ok
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("notes").experiment_id],
                                "tags.`workbench.kind` = 'image'")
    notes = [a.path for a in client.list_artifacts(run.info.run_id, "notes")]
    assert len(notes) == len(HOSTILE) and all(n.startswith("notes/") and "/" not in n[6:] and "\\" not in n
                                              for n in notes), notes
    store = Path(tracking_uri[len("sqlite:///"):]).parent
    outside = [p for p in every_file(tmp_path) if not p.resolve().is_relative_to(store.resolve())
               and not p.resolve().is_relative_to((tmp_path / "g").resolve())]
    assert outside == []


@pytest.mark.parametrize("experiment", ["../../escaped", "/abs/escaped", "a/../../b"])
def test_an_experiment_name_cannot_move_the_artifacts_out_of_the_store(tracking_uri: str, fake_backend,
                                                                       tmp_path: Path, experiment: str) -> None:
    spec = parse_spec({"name": "named", "prompt": "a cat", "backend": "fake", "model": "m", "seeds": [1],
                       "params": {"width": 16, "height": 16}})
    summary = run_experiment(spec, tracking_uri=tracking_uri, experiment=experiment, progress=False,
                             grids_dir=tmp_path / "g")
    assert summary.ok
    artifacts = (Path(tracking_uri[len("sqlite:///"):]).parent / "artifacts").resolve()
    location = MlflowClient(tracking_uri).get_experiment_by_name(experiment).artifact_location
    assert Path(location.removeprefix("file://")).resolve().parent == artifacts
    assert not (tmp_path / "escaped").exists() and not Path("/abs/escaped").exists()


@pytest.mark.parametrize("name", ["../templates/photoreal", "../../etc/passwd", "/etc/passwd", "_shared/quality"])
def test_template_names_cannot_reach_outside_the_library_or_its_private_files(name: str) -> None:
    with pytest.raises(TemplateError, match="no such template"):
        TemplateLibrary().get(name)


@pytest.mark.parametrize("target", ["../../../../etc/hostname", "/etc/hostname", "../outside.j2"])
def test_includes_cannot_reach_outside_the_library(tmp_path: Path, target: str) -> None:
    (tmp_path / "outside.j2").write_text("SECRET")
    library = tmp_path / "lib"
    library.mkdir()
    (library / "sneaky.j2").write_text(textwrap.dedent(f"""\
        ---
        description: Includes a file outside the library.
        ---
        {{% include "{target}" %}}
        """))
    with pytest.raises(TemplateError) as info:
        TemplateLibrary([library]).get("sneaky").render()
    assert "SECRET" not in str(info.value)
