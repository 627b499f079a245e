"""End to end in a real browser: JupyterLab on loopback, the compare notebook, headless Chromium.

The notebook is opened and run with JupyterLab's own menu (Run → Run All Cells) against a store the
quick start filled; the test then counts the images the grid widget drew, reads its row and column
labels, clicks a cell (a round trip through the kernel) and saves screenshots under test-artifacts/.
Chromium is Debian's (``make browser-deps``); Playwright drives it through ``executable_path`` and
never downloads a browser of its own. Without Chromium or Playwright the test is skipped, or failed
when WORKBENCH_REQUIRE_BROWSER=1 (CI), so that a broken install cannot pass as a skip.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

from tests.browser.lab import CHROMIUM_ARGS, find_chromium, jupyterlab
from tests.browser.stores import quickstart_store
from tests.requirements import missing

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = find_chromium()

# Every code cell shows "[n]:" (ran) or some output holds a traceback (stopped).
_FINISHED = """() => {
  const prompts = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')]
      .map(e => e.textContent.trim());
  const failed = [...document.querySelectorAll('.jp-OutputArea-output')].some(e => e.textContent.includes('Traceback'));
  return failed || (prompts.length > 0 && prompts.every(t => /^\\[\\d+\\]:?$/.test(t)));
}"""
_KERNEL_READY = """() => {
  const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = widget && widget.sessionContext && widget.sessionContext.session
      && widget.sessionContext.session.kernel;
  return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
}"""


def browser_missing() -> str | None:
    """Why the browser test cannot run here, or None when Chromium and Playwright are both present."""
    if CHROMIUM is None:
        return "Chromium not found (/usr/bin/chromium): install Debian's 'chromium' (make browser-deps)"
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed: pip install -e '.[test]' (make install-test)"
    return None


def require_browser() -> None:
    """Skip without a browser, or fail when WORKBENCH_REQUIRE_BROWSER=1 says it must be there."""
    reason = browser_missing()
    if reason:
        missing(reason, "WORKBENCH_REQUIRE_BROWSER")


@pytest.fixture
def lab_root(tmp_path: Path) -> Path:
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "compare.ipynb", root / "compare.ipynb")
    return root


def test_compare_notebook_renders_the_grid_in_chromium(
        lab_root: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, embedded_model: Path,
        migrated_db: Path, session_home: Path) -> None:
    require_browser()
    from playwright.sync_api import sync_playwright

    store = quickstart_store(tmp_path_factory, migrated_db)
    env = {"WORKBENCH_HOME": str(session_home), "MLFLOW_TRACKING_URI": store, "OMP_NUM_THREADS": "1",
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    ARTIFACTS.mkdir(exist_ok=True)
    with jupyterlab(lab_root, tmp_path / "jupyter", env) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1360, "height": 1100})
        page.set_default_timeout(90_000)
        try:
            page.goto(server.notebook_url("compare.ipynb"))
            page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell")
            page.wait_for_function(_KERNEL_READY, timeout=120_000)
            page.evaluate("() => window.jupyterapp.commands.execute('application:toggle-left-area')")
            # as a person would: the Run menu, then "Run All Cells"
            page.locator(".lm-MenuBar-itemLabel").filter(has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel").filter(has_text=re.compile(r"^Run All Cells$")).click()
            page.wait_for_function(_FINISHED, timeout=180_000)
            tracebacks = page.locator(".jp-OutputArea-output", has_text="Traceback")
            assert tracebacks.count() == 0, tracebacks.first.inner_text()
            page.wait_for_function("() => document.querySelectorAll('.wb-comparison-grid .wb-grid img').length >= 14")

            grids = page.locator(".wb-comparison-grid")
            assert grids.count() == 2
            first, cross = grids.nth(0), grids.nth(1)
            # seeds × colours: 9 images; guidance × colour at seed 1, one factor at a time: 5 images
            assert first.locator(".wb-grid img").count() == 9
            assert cross.locator(".wb-grid img").count() == 5
            assert cross.locator(".wb-status-missing").count() == 4  # the "not run" corners
            assert first.locator(".wb-row-label").all_inner_texts() == ["seed 1", "seed 2", "seed 3"]
            columns = [t.replace("(base)", "").strip() for t in first.locator(".wb-col-label").all_inner_texts()]
            assert columns == ["red", "blue", "green"]
            assert cross.locator(".wb-row-label").all_inner_texts() == ["1.0", "3.0", "7.5"]
            # images decoded and laid out, not just present
            sizes = first.locator(".wb-grid img").evaluate_all("els => els.map(e => [e.naturalWidth, e.width])")
            assert all(natural == 64 and shown == 128 for natural, shown in sizes), sizes
            # the detail panel the notebook opened in code, with the image and the parameters
            panel = first.locator(".wb-detail-panel")
            assert panel.count() == 1 and panel.locator("img").count() == 1
            assert "shapes" in panel.inner_text() and "guidance" in panel.inner_text()

            first.evaluate("e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "compare-notebook.png"))

            # a click in the browser goes through the kernel and opens the panel of that run
            cross.locator(".wb-tile-finished button").first.click()
            cross.locator(".wb-detail-panel").wait_for()
            assert "guidance=1.0" in cross.locator(".wb-detail-panel").inner_text()
            cross.locator(".wb-detail-panel").evaluate("e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "compare-notebook-detail.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "compare-notebook-failure.png"))
            print(server.log_tail())
            raise
        finally:
            browser.close()


def test_a_missing_browser_is_a_failure_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(globals(), "CHROMIUM", None)  # as on a machine without Debian's chromium
    monkeypatch.setenv("WORKBENCH_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="WORKBENCH_REQUIRE_BROWSER=1 but Chromium not found"):
        require_browser()
    monkeypatch.delenv("WORKBENCH_REQUIRE_BROWSER")
    with pytest.raises(pytest.skip.Exception, match="Chromium not found"):
        require_browser()
