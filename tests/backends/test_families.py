"""Every model family through the real path: tiny random pipelines of SD 1.5, SDXL (+ Turbo), Flux (dev,
schnell) and SD3 built from configs (tests/families.py), saved, loaded by the diffusers backend, swept
into a real MLflow store and reproduced bit for bit; the plan-time refusals; LoRAs built with peft."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.backends.diffusers import DiffusersBackend
from workbench.backends.diffusers_families import family_of_folder, family_of_pipeline
from workbench.errors import UnsupportedRequestError
from workbench.experiments.spec import parse_spec
from workbench.provenance.a1111 import parse_a1111_parameters
from workbench.provenance.png import read_png_metadata
from workbench.reproduce.regenerate import reproduce
from workbench.run.plan import make_plan
from workbench.run.runner import run_experiment
from workbench.tracking.store import Tracker
from workbench.types import GeneratedImage, GenerationRequest, Lora
from workbench.widgets.comparison import ComparisonGrid

from .. import families

pytestmark = pytest.mark.slow

EXPECTED = {"sd15": "sd1", "sdxl": "sdxl", "sdxl-turbo": "sdxl-turbo", "flux-schnell": "flux-schnell",
            "flux-dev": "flux-dev", "sd3": "sd3"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("families")
    return {name: families.build(name, root / name) for name in EXPECTED}


@pytest.fixture(scope="module")
def backend() -> DiffusersBackend:
    return DiffusersBackend(device="cpu")


def req(model: Path, **kw) -> GenerationRequest:  # type: ignore[no-untyped-def]
    fields = {"backend": "diffusers", "model": str(model), "prompt": "a red circle on the left", "seed": 1,
              "width": 32, "height": 32, "steps": 2, "guidance": 3.0}
    fields.update(kw)
    return GenerationRequest(**fields)


def _plain(folder: Path, **call) -> np.ndarray:  # type: ignore[no-untyped-def]
    from diffusers import AutoPipelineForText2Image

    pipe = AutoPipelineForText2Image.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe(output_type="np", **call).images


def _pixels(image) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_family_is_read_from_the_configs_and_the_image_is_plain_diffusers(name: str, folders, backend) -> None:
    folder = folders[name]
    family = family_of_folder(folder)
    assert family is not None and family.name == EXPECTED[name]
    request = req(folder, guidance=0.0 if family.guidance == "none" else 3.0)
    backend.validate(request)
    [result] = backend.generate([request])
    assert isinstance(result, GeneratedImage), result
    assert family_of_pipeline(backend.pipeline(str(folder))).name == family.name
    assert result.environment["family"] == family.name and result.environment["dtype"] == "float32"
    # The same arguments to plain diffusers, no negative prompt at all: the same pixels.
    call = {"prompt": [request.prompt], "num_inference_steps": 2, "width": 32, "height": 32,
            "guidance_scale": request.guidance, "generator": [torch.Generator().manual_seed(1)]}
    from diffusers.utils import numpy_to_pil

    expected = numpy_to_pil(_plain(folder, **call))[0]
    assert np.array_equal(_pixels(result.image), _pixels(expected))


def test_sdxl_without_negative_prompt_keeps_its_zeroed_negative(folders, backend) -> None:
    """An unset negative prompt is not sent as "": SDXL zeroes the negative embedding only for none."""
    folder = folders["sdxl"]
    [result] = backend.generate([req(folder, guidance=5.0)])
    assert "negative_prompt" not in result.environment["call"]
    from diffusers.utils import numpy_to_pil

    common = {"prompt": ["a red circle on the left"], "num_inference_steps": 2, "width": 32, "height": 32,
              "guidance_scale": 5.0}
    zeroed = numpy_to_pil(_plain(folder, generator=[torch.Generator().manual_seed(1)], **common))[0]
    empty = numpy_to_pil(_plain(folder, generator=[torch.Generator().manual_seed(1)], negative_prompt=[""],
                                **common))[0]
    assert np.array_equal(_pixels(result.image), _pixels(zeroed))
    assert not np.array_equal(_pixels(zeroed), _pixels(empty))  # what sending "" would have made


def test_plan_time_refusals_name_the_rule(folders, backend) -> None:
    flux = folders["flux-dev"]
    multiple = family_of_folder(flux).size_multiple
    with pytest.raises(UnsupportedRequestError, match=f"multiples of {multiple}"):
        backend.validate(req(flux, width=multiple * 5 + multiple // 2))
    with pytest.raises(UnsupportedRequestError, match="needs a CUDA GPU|moves weights between a CUDA GPU"):
        backend.validate(req(flux, options={"offload": "model"}))
    with pytest.raises(UnsupportedRequestError, match=r"takes no option\(s\) \['true_cfg_scale'\]"):
        backend.validate(req(folders["sdxl"], options={"true_cfg_scale": 4}))
    with pytest.raises(UnsupportedRequestError, match="max_sequence_length is T5's prompt length, 1 to 512"):
        backend.validate(req(folders["sd3"], options={"max_sequence_length": 1024}))
    with pytest.raises(UnsupportedRequestError, match="takes no option"):
        backend.validate(req(folders["sd15"], options={"max_sequence_length": 77}))
    # Flux's negative prompt needs true CFG: recorded, not silently dropped, and not sent.
    notes = backend.uncontrolled(req(flux, negative_prompt="blurry"))
    assert "true_cfg_scale > 1" in notes["negative_prompt"]
    [result] = backend.generate([req(flux, negative_prompt="blurry")])
    assert "negative_prompt" not in result.environment["call"]
    [with_cfg] = backend.generate([req(flux, negative_prompt="blurry", options={"true_cfg_scale": 2.0})])
    assert with_cfg.environment["call"]["true_cfg_scale"] == 2.0
    assert not np.array_equal(_pixels(result.image), _pixels(with_cfg.image))
    assert "guidance" in backend.uncontrolled(req(folders["flux-schnell"]))


def test_t5_families_report_t5_truncation_not_clips(folders, backend) -> None:
    long_prompt = " ".join(["a red circle on the left"] * 20)  # > 77 CLIP tokens, < 512 T5 tokens
    [sd3] = backend.generate([req(folders["sd3"], prompt=long_prompt)])
    assert "truncated_prompt" not in sd3.flags
    [short] = backend.generate([req(folders["sd3"], prompt=long_prompt, options={"max_sequence_length": 16})])
    assert "truncated_prompt" in short.flags and "T5" in short.notes["truncated_prompt"]
    [sd15] = backend.generate([req(folders["sd15"], prompt=long_prompt)])
    assert "truncated_prompt" in sd15.flags


@pytest.mark.parametrize("name", ["sdxl", "flux-dev", "sd3"])
def test_a_sweep_and_a_bit_exact_reproduce_for_each_family(name: str, folders, tracking_uri, tmp_path) -> None:
    family = family_of_folder(folders[name])
    size = family.size_multiple * (32 // family.size_multiple)
    spec = parse_spec({"name": f"fam-{name}", "prompt": "a {{ colour }} circle", "variables": {"colour": "red"},
                       "model": str(folders[name]), "params": {"width": size, "height": size, "steps": 2},
                       "seeds": [1, 2], "vary": {"var.colour": ["blue"]}})
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path)
    assert summary.finished == 4 and summary.failed == 0 and summary.grids
    records = Tracker(tracking_uri).records(f"fam-{name}")
    assert {r.params["guidance"] for r in records} == {str(float(family.default_guidance))}  # the family's
    assert {r.params["steps"] for r in records} == {"2"}
    report = reproduce(records[-1].run_id, tracking_uri=tracking_uri, exact_batch=True)
    assert report.bit_exact, report


# ---------------------------------------------------------------------------------------------- LoRA

@pytest.fixture(scope="module")
def sd15_lora(folders, tmp_path_factory) -> Path:
    return families.build_lora(folders["sd15"], tmp_path_factory.mktemp("lora") / "style")


def test_lora_scale_sweep_switches_adapters_without_reloading(folders, sd15_lora, tracking_uri, tmp_path) -> None:
    spec = parse_spec({"name": "lora-sweep", "prompt": "a red circle", "model": str(folders["sd15"]),
                       "params": {"width": 32, "height": 32, "steps": 2, "guidance": 3.0}, "seeds": [4],
                       "loras": [{"name": "style", "source": str(sd15_lora), "scale": 1.0}],
                       "vary": {"lora.style.scale": [0.0, 0.5], "lora.style": ["off"]}})
    plan = make_plan(spec, tracker=Tracker(tracking_uri))
    [base] = [r for r in plan.requests if r.factor is None]
    assert base.loras[0].hash and len(base.loras[0].hash) == 64  # the weights' hash, not the path, keys the run
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path)
    assert summary.finished == 4
    # each LoRA factor gets its own comparison grid, and the notebook grid pivots on it
    assert {p.name for p in summary.grids} == {"grid-lora.style.scale.png", "grid-lora.style.png"}
    widget = ComparisonGrid("lora-sweep", tracking_uri, cols="lora.style.scale", ratings=False)
    assert widget.data.col_levels == ["0.0", "0.5", "1.0"] and widget.data.base_col == "1.0"
    assert "lora.style" in widget.rows_control.options
    backend = plan.backends["diffusers"]
    tracker = Tracker(tracking_uri)
    by_level = {r.params.get("lora.style.scale") + "/" + r.params.get("lora.style"): r
                for r in tracker.records("lora-sweep")}
    images = {k: _pixels(tracker.load_image(r.run_id)) for k, r in by_level.items()}
    assert set(images) == {"1.0/on", "0.0/on", "0.5/on", "1.0/off"}
    assert not np.array_equal(images["1.0/on"], images["0.5/on"])
    assert not np.array_equal(images["1.0/on"], images["1.0/off"])
    assert np.array_equal(images["0.0/on"], images["1.0/off"])  # scale 0 equals no LoRA, bit for bit
    # one pipeline, one adapter loaded once, switched per call
    pipe = backend.pipeline(str(folders["sd15"]))
    assert sum(len(v) for v in pipe.get_list_adapters().values()) >= 1
    assert {n for v in pipe.get_list_adapters().values() for n in v} == {"wb_" + base.loras[0].hash[:16]}
    # the A1111 text says it as A1111 does, and our own reader rebuilds the LoRA
    png = tracker.load_bytes(by_level["0.5/on"].run_id, "image.png")
    path = tmp_path / "lora.png"
    path.write_bytes(png)
    text = read_png_metadata(path).parameters
    params = parse_a1111_parameters(text)
    assert "<lora:style:0.5>" in params["Prompt"] and params["Lora hashes"] == f"style: {base.loras[0].hash[:12]}"
    report = reproduce(by_level["0.5/on"].run_id, tracking_uri=tracking_uri)
    assert report.bit_exact, report


def test_lcm_lora_with_the_lcm_scheduler(folders, sd15_lora, backend) -> None:
    lora = backend.resolve_loras((Lora("lcm", str(sd15_lora), 1.0),))
    request = req(folders["sd15"], scheduler="lcm", steps=4, guidance=1.5, loras=lora)
    backend.validate(request)
    [a] = backend.generate([request])
    [b] = backend.generate([request])
    assert isinstance(a, GeneratedImage) and a.environment["scheduler"] == "LCMScheduler"
    assert np.array_equal(_pixels(a.image), _pixels(b.image))


def test_a_lora_a_backend_cannot_take_is_refused_at_plan_time(fake_backend) -> None:
    spec = parse_spec({"name": "fake-lora", "prompt": "a cat", "backend": "fake", "model": "m", "seeds": [1],
                       "loras": [{"name": "x", "source": "owner/name"}]})
    with pytest.raises(UnsupportedRequestError, match="fake takes no LoRAs"):
        make_plan(spec)
    with pytest.raises(Exception, match="no LoRA named 'y'"):
        parse_spec({"name": "bad", "prompt": "a cat", "model": "m", "seeds": [1], "vary": {"lora.y.scale": [1]}})
