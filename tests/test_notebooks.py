"""Every notebook in notebooks/ runs top to bottom in a real kernel (nbclient) against a temp store.

The kernel inherits WORKBENCH_HOME (the session's, which holds the embedded model),
MLFLOW_TRACKING_URI (a fresh store per test, or the quick start's) and OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests.browser.stores import quickstart_store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def execute(name: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> nbformat.NotebookNode:
    for key, value in {"OMP_NUM_THREADS": "1", **env}.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(notebook, timeout=240, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    return notebook


def text_of(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                parts.append(output.text)
            elif output.output_type in ("execute_result", "display_data"):
                parts.append(output.data.get("text/plain", ""))
    return "\n".join(parts)


def widget_views(notebook: nbformat.NotebookNode) -> list[dict[str, Any]]:
    return [o.data[WIDGET_VIEW] for c in notebook.cells for o in c.get("outputs", [])
            if o.output_type in ("execute_result", "display_data") and WIDGET_VIEW in o.data]


def widget_models(notebook: nbformat.NotebookNode) -> Counter[str]:
    state = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    return Counter(model["model_name"] for model in state.values())


def test_notebooks_are_committed_without_outputs() -> None:
    names = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert {"quickstart", "compare", "template-library"} <= set(names)
    for path in NOTEBOOKS.glob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert path.stat().st_size < 20_000, f"{path.name} is large: strip its outputs"
        assert "widgets" not in notebook.metadata, f"{path.name} holds widget state: strip it"
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} holds outputs"


def test_quickstart_notebook_generates_and_shows_the_grid(
        tracking_uri: str, embedded_model: Path, session_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = execute("quickstart", monkeypatch, WORKBENCH_HOME=str(session_home), MLFLOW_TRACKING_URI=tracking_uri)
    text = text_of(notebook)
    assert f"tracking store: {tracking_uri}" in text
    assert "prompt:   a large blue triangle on the left, white background" in text
    assert "27 images in the plan, 27 still to run" in text
    assert "experiment 'quickstart': 27 generated, 0 already logged, 0 failed, 0 blocked" in text
    assert "columns: ['red', 'blue', 'green'] | held: {'guidance': '3.0'" in text
    assert len(widget_views(notebook)) == 1
    assert widget_models(notebook)["ImageModel"] == 9  # 3 seeds × 3 colours, loaded lazily: no more
    # the effects report on adherence: one line per factor, its best level named
    assert re.search(r"var\.colour\s+red [01]\.\d\d, blue [01]\.\d\d, green [01]\.\d\d  \| best: \w+", text), text
    assert re.search(r"guidance\s+.*\| best: [\d.]+", text)
    assert any("image/png" in o.get("data", {}) for c in notebook.cells for o in c.get("outputs", []))


def test_compare_notebook_explores_a_filled_store(
        tmp_path_factory: pytest.TempPathFactory, migrated_db: Path, embedded_model: Path, session_home: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = quickstart_store(tmp_path_factory, migrated_db)
    notebook = execute("compare", monkeypatch, WORKBENCH_HOME=str(session_home), MLFLOW_TRACKING_URI=store)
    text = text_of(notebook)
    assert "27 runs in 'quickstart'" in text and "ran the quick start" not in text
    assert "rows: ['seed 1', 'seed 2', 'seed 3']" in text
    assert "'guidance': '3.0'" in text and "| images loaded so far: 9" in text
    assert "base · seed 1 FINISHED" in text
    exported = "notebook-var.colour-x-guidance-seed_1-var.position_center-var.shape_circle.png"  # held factors named
    assert f"saved {exported} | logged to parent run" in text
    assert len(widget_views(notebook)) == 2
    # 9 + 5 thumbnails, and the full image of the detail panel
    assert widget_models(notebook)["ImageModel"] == 15
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    parent = text.split("logged to parent run ")[1].split()[0]
    assert f"grids/{exported}" in {a.path for a in client.list_artifacts(parent, "grids")}


def test_template_library_notebook_renders_every_template(
        session_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = execute("template-library", monkeypatch, WORKBENCH_HOME=str(session_home))
    text = text_of(notebook)
    from workbench.prompts.templates import TemplateLibrary

    for name in TemplateLibrary().names():
        assert f"== {name} (version " in text
    assert "neon" in text.split("== product")[-1]  # the explorer's re-rendered prompt, last
    html = [o.data["text/html"] for c in notebook.cells for o in c.get("outputs", []) if "text/html" in
            o.get("data", {})]
    assert html and "<th>template</th>" in html[0] and "photoreal" in html[0]
    assert len(widget_views(notebook)) == 1 and widget_models(notebook)["DropdownModel"] >= 4
    assert json.dumps(notebook.metadata.get("widgets", {})).count("photoreal") >= 1
