"""The wheel a plain ``pip install`` builds: every module, the template library, same template versions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from workbench.prompts.templates import TemplateLibrary

from .conftest import ROOT

pytestmark = pytest.mark.slow

# What a source tree holds that the build must not see (and that is slow to copy).
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".workbench", "build", "dist", "*.egg-info", "mlruns",
                                    "test-artifacts", "__pycache__", ".pytest_cache", "node_modules")

PROBE = """
import json, sys
import workbench, workbench.config
from workbench.prompts.templates import TemplateLibrary
library = TemplateLibrary()
print(json.dumps({"module": workbench.__file__,
                  "dirs": [str(d) for d in library.dirs],
                  "versions": {t.name: t.version for t in library.templates()},
                  "photoreal": library.render("photoreal").prompt}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from a copy of the source tree, unpacked as pip would into site-packages."""
    tmp = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, tmp / "src", ignore=NOT_SOURCE)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp / "dist"), str(tmp / "src")], check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("workbench-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp / "site")
    return tmp / "site"


def test_wheel_holds_every_module_and_template(installed):
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "workbench").rglob("*.py")}
    shipped = {p.relative_to(installed).as_posix() for p in (installed / "workbench").rglob("*.py")}
    assert modules - shipped == set(), "add the missing package to [tool.setuptools] packages in pyproject.toml"
    templates = {p.relative_to(ROOT / "templates").as_posix() for p in (ROOT / "templates").rglob("*.j2")}
    carried = {p.relative_to(installed / "workbench/templates_builtin").as_posix()
               for p in (installed / "workbench/templates_builtin").rglob("*.j2")}
    assert templates and carried == templates


def test_wheel_carries_the_shapes_model_whole(installed):
    """embedded:shapes must load from a plain install: every file of its folder is in the wheel, unchanged."""
    folder = ROOT / "workbench" / "models" / "shapes" / "weights"
    ours = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    shipped_folder = installed / "workbench" / "models" / "shapes" / "weights"
    shipped = {p.relative_to(shipped_folder).as_posix(): p.read_bytes() for p in shipped_folder.rglob("*")
               if p.is_file()}
    assert {"model_index.json", "README.md", "unet/diffusion_pytorch_model.safetensors"} <= set(ours)
    assert shipped == ours


def test_installed_package_finds_its_templates_with_the_same_versions(installed, tmp_path):
    # Outside the checkout, with only the unpacked wheel on the path ahead of the editable install.
    env = {**os.environ, "PYTHONPATH": str(installed), "WORKBENCH_HOME": str(tmp_path / "home")}
    env.pop("WORKBENCH_TEMPLATES", None)
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True).stdout
    probe = json.loads(out.strip().splitlines()[-1])
    assert Path(probe["module"]).is_relative_to(installed)
    assert probe["dirs"] == [str(installed / "workbench" / "templates_builtin")]

    checkout = TemplateLibrary([ROOT / "templates"])
    # Same content, same version hash: run keys do not depend on how workbench was installed.
    assert probe["versions"] == {t.name: t.version for t in checkout.templates()}
    assert {"photoreal", "product", "concept_art", "diagram"} <= set(probe["versions"])
    assert probe["photoreal"] == checkout.render("photoreal").prompt
