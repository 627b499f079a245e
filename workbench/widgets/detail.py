"""The detail panel of one run: image, every parameter, template and variables, requested vs revised
prompt with the difference highlighted, metrics, where to find the run in MLflow, and a button that
regenerates it with ``workbench.reproduce`` and shows the verdict.

The HTML is built by pure functions (``detail_html``, ``highlight_prompts``, ``mlflow_link``), tested
without a browser; ``detail_panel`` only puts it into widgets.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import resolve_tracking_uri
from ..prompts.diff import PromptDiff, diff_prompts
from ..reproduce.regenerate import reproduce
from ..reproduce.report import ReproductionReport
from ..tracking.schema import (
    BATCH_SIZE_METRIC,
    FAILURE_ARTIFACT,
    NEGATIVE_PROMPT_ARTIFACT,
    PROMPT_ARTIFACT,
    REVISED_PROMPT_ARTIFACT,
    RUN_NAME_TAG,
    RunRecord,
)
from ..tracking.store import Tracker

__all__ = ["RunDetail", "load_detail", "mlflow_link", "highlight_prompts", "detail_html", "batch_size",
           "reproduction_html", "detail_panel"]

_STYLE = """<style>
.wb-detail {line-height: 1.45}
.wb-detail-panel img {image-rendering: pixelated}
.wb-detail p {margin: 4px 0}
.wb-detail table {border-collapse: collapse; font-size: 12px; margin: 2px 0 8px 0}
.wb-detail td, .wb-detail th {border-bottom: 1px solid #ddd; padding: 2px 8px; text-align: left;
  vertical-align: top; max-width: 560px; overflow-wrap: anywhere}
.wb-detail h4 {margin: 10px 0 2px 0}
.wb-detail mark.wb-dropped {background: #fdd; text-decoration: line-through}
.wb-detail mark.wb-added {background: #dfd}
.wb-detail .wb-prompt {font-family: monospace; font-size: 12px; white-space: pre-wrap; margin: 2px 0}
</style>"""


@dataclass(frozen=True)
class RunDetail:
    """What the panel shows about one run (everything read from the store, nothing regenerated)."""

    record: RunRecord
    experiment: str
    experiment_id: str | None
    tracking_uri: str  # as shown: credentials removed
    prompt: str
    negative_prompt: str
    revised_prompt: str | None
    failure: str | None = None


def _text_artifact(tracker: Tracker, run_id: str, name: str) -> str | None:
    try:
        return tracker.load_bytes(run_id, name).decode("utf-8").rstrip("\n")
    except Exception:  # not logged for this run (no revision, no negative prompt, not a failure)
        return None


def load_detail(tracker: Tracker, record: RunRecord, experiment: str, experiment_id: str | None = None) -> RunDetail:
    """Read the texts of ``record`` (full prompt, revised prompt, failure) from its artifacts."""
    if experiment_id is None:
        experiment_id = tracker.experiment_id(experiment, create=False)
    prompt = _text_artifact(tracker, record.run_id, PROMPT_ARTIFACT) or record.params.get("prompt", "")
    negative = _text_artifact(tracker, record.run_id, NEGATIVE_PROMPT_ARTIFACT)
    return RunDetail(record=record, experiment=experiment, experiment_id=experiment_id,
                     tracking_uri=tracker.display_uri, prompt=prompt,
                     negative_prompt=negative if negative is not None else record.params.get("negative_prompt", ""),
                     revised_prompt=_text_artifact(tracker, record.run_id, REVISED_PROMPT_ARTIFACT),
                     failure=_text_artifact(tracker, record.run_id, FAILURE_ARTIFACT))


def mlflow_link(tracking_uri: str, experiment_id: str | None, run_id: str) -> tuple[str | None, str]:
    """(URL, how to open it): the run page when the store is an MLflow server, else the command to
    start the UI on this store and the page to open there."""
    page = f"#/experiments/{experiment_id or '0'}/runs/{run_id}"
    if tracking_uri.startswith(("http://", "https://")):
        url = f"{tracking_uri.rstrip('/')}/{page}"
        return url, f"open {url}"
    default = tracking_uri == resolve_tracking_uri(None)
    command = "workbench ui" if default else f"workbench ui --tracking-uri {tracking_uri}"
    return None, f"run `{command}`, then open http://127.0.0.1:5000/{page}"


def _mark(text: str, terms: tuple[str, ...], css: str) -> str:
    """``text`` as HTML with every occurrence of ``terms`` (case-insensitive) wrapped in a mark."""
    spans: list[tuple[int, int]] = []
    for term in sorted(terms, key=len, reverse=True):
        words = term.split()
        if not words:
            continue
        pattern = r"(?<!\w)" + r"[\s\W]+".join(re.escape(w) for w in words) + r"(?!\w)"
        for match in re.finditer(pattern, text, flags=re.IGNORECASE):
            if not any(s < match.end() and match.start() < e for s, e in spans):
                spans.append((match.start(), match.end()))
    out, last = [], 0
    for start, end in sorted(spans):
        out += [html.escape(text[last:start]), f'<mark class="{css}">{html.escape(text[start:end])}</mark>']
        last = end
    out.append(html.escape(text[last:]))
    return "".join(out)


def highlight_prompts(requested: str, revised: str | None) -> tuple[str, str, PromptDiff]:
    """HTML of both prompts: what the backend dropped is struck through in the requested prompt, what
    it added is highlighted in the revised one (``diff_prompts`` decides what counts)."""
    diff = diff_prompts(requested, revised)
    if revised is None:
        return html.escape(requested), "", diff
    return _mark(requested, diff.dropped, "wb-dropped"), _mark(revised, diff.added, "wb-added"), diff


def _table(rows: Mapping[str, Any]) -> str:
    if not rows:
        return "<p><i>none</i></p>"
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items())
    return f"<table>{body}</table>"


def _format_metric(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def detail_html(detail: RunDetail) -> str:
    """The whole panel as one HTML string (status, prompts, template, parameters, metrics, MLflow link)."""
    r = detail.record
    esc = html.escape
    parts = [_STYLE, '<div class="wb-detail">',
             f"<h3 style='margin:4px 0'>{esc(r.tags.get(RUN_NAME_TAG, r.run_id))}</h3>",
             f"<p>status <b>{esc(r.outcome)}</b> · run <code>{esc(r.run_id)}</code> · experiment "
             f"<b>{esc(detail.experiment)}</b></p>"]
    if r.reason:
        parts.append(f"<p><b>{'reason' if r.outcome != 'FINISHED' else 'flags'}:</b> {esc(r.reason)}</p>")
    if detail.failure and detail.failure.split(":", 1)[-1].strip() != r.reason.strip():
        parts.append(f"<p class='wb-prompt'>{esc(detail.failure)}</p>")
    requested, revised, diff = highlight_prompts(detail.prompt, detail.revised_prompt)
    parts.append("<h4>Prompt</h4>")
    if detail.revised_prompt is None:
        parts.append(f"<p class='wb-prompt'>{requested}</p><p><i>The backend used the prompt as given "
                     "(no revised prompt).</i></p>")
    else:
        summary = []
        if diff.dropped:
            summary.append("dropped: " + ", ".join(esc(t) for t in diff.dropped))
        if diff.added:
            summary.append("added: " + ", ".join(esc(t) for t in diff.added))
        summary.append(f"drift {diff.drift:.2f}")
        parts += ["<table>",
                  f"<tr><th>requested</th><td class='wb-prompt'>{requested}</td></tr>",
                  f"<tr><th>revised</th><td class='wb-prompt'>{revised}</td></tr>",
                  f"<tr><th>difference</th><td>{' · '.join(summary)}</td></tr></table>"]
    if detail.negative_prompt:
        parts.append(f"<p><b>negative prompt:</b> <span class='wb-prompt'>{esc(detail.negative_prompt)}</span></p>")
    params = dict(sorted(r.params.items()))
    variables = {k[4:]: v for k, v in params.items() if k.startswith("var.")}
    template = params.get("template")
    parts.append("<h4>Template</h4>")
    if template:
        parts.append(f"<p><b>{esc(template)}</b> (version <code>{esc(params.get('template_version', '?'))}</code>)"
                     "</p>")
    else:
        parts.append("<p><i>a literal prompt (no template)</i></p>")
    parts.append(_table(variables))
    parts.append("<h4>Parameters</h4>" + _table(params))
    parts.append("<h4>Metrics</h4>" + _table({k: _format_metric(v) for k, v in sorted(r.metrics.items())}))
    url, how = mlflow_link(detail.tracking_uri, detail.experiment_id, r.run_id)
    link = f"<a href='{esc(url)}' target='_blank' rel='noopener'>{esc(url)}</a>" if url else esc(how)
    parts.append(f"<h4>MLflow</h4><p>{link}</p></div>")
    return "\n".join(parts)


def batch_size(record: RunRecord) -> int:
    """How many images the run's backend call made (its ``batch_size`` metric; 1 where not logged)."""
    return max(1, int(record.metrics.get(BATCH_SIZE_METRIC, 1) or 1))


def reproduction_html(report: ReproductionReport) -> str:
    """The verdict in bold, the reproduction run it was logged as, then the whole report."""
    colour = "#060" if report.bit_exact else "#a60"
    logged = f" · logged as run <code>{html.escape(report.reproduction_run_id)}</code>" \
        if report.reproduction_run_id else ""
    verdict = f"<b style='color:{colour}'>{html.escape(report.verdict)}</b>"
    return f"<p class='wb-verdict'>verdict: {verdict}{logged}</p><pre>{html.escape(report.to_text())}</pre>"


def detail_panel(detail: RunDetail, image: bytes | None, *, tracking_uri: str,
                 on_close: Callable[[], None] | None = None) -> Any:
    """The panel as widgets: a header with the reproduce button (with a *whole batch* box, ticked when
    the run was made in a batch: only regenerating that batch can be bit-exact) and a close button, then
    the full image beside the details."""
    import ipywidgets as w

    close = w.Button(description="close", icon="times", layout=w.Layout(width="90px"))
    if on_close is not None:
        close.on_click(lambda _: on_close())
    result = w.HTML()  # the reproduction report, under the header
    button = w.Button(description="Reproduce", icon="redo", button_style="info",
                      tooltip="regenerate this run and compare it with the logged image")
    size = batch_size(detail.record)
    whole_batch = w.Checkbox(value=size > 1, description=f"whole batch ({size})", indent=False,
                             layout=w.Layout(width="140px"),
                             tooltip="regenerate every image of the batch it was made in, in one call")
    actions: list[Any] = [button, whole_batch, close] if size > 1 else [button, close]
    if detail.record.outcome != "FINISHED":
        button.disabled = whole_batch.disabled = True
        button.tooltip = "only runs that produced an image can be reproduced"

    def run(_: Any) -> None:
        button.disabled = True
        result.value = "<i>reproducing…</i>"
        try:
            # ticked: the whole batch where the store holds it, else alone (the report says why)
            report = reproduce(detail.record.run_id, tracking_uri=tracking_uri,
                               exact_batch=None if whole_batch.value else False)
            result.value = reproduction_html(report)
        except Exception as exc:  # shown in the panel, never raised into the notebook
            result.value = f"<pre style='color:#b00'>{html.escape(f'{type(exc).__name__}: {exc}')}</pre>"
        finally:
            button.disabled = False
    button.on_click(run)
    header = w.HBox([w.HTML(f"<b>run {html.escape(detail.record.run_id)}</b>"),
                     w.HBox(actions, layout=w.Layout(grid_gap="6px"))],
                    layout=w.Layout(justify_content="space-between"))
    if image is not None:
        import io

        from PIL import Image as PILImage

        with PILImage.open(io.BytesIO(image)) as img:
            native = max(img.size)
        picture: Any = w.Image(value=image, format="png", width=str(max(256, min(native, 768))))
    else:
        picture = w.HTML(f"<div style='width:256px;height:256px;background:#f3f3f3;display:flex;align-items:center;"
                         f"justify-content:center'><b>{html.escape(detail.record.outcome)}</b></div>")
    info = w.HTML(detail_html(detail), layout=w.Layout(max_width="760px"))
    rows: list[Any] = [header, result,
                       w.HBox([picture, info], layout=w.Layout(align_items="flex-start", grid_gap="12px"))]
    panel = w.VBox(rows, layout=w.Layout(border="1px solid #ccc", padding="8px", margin="8px 0"))
    panel.add_class("wb-detail-panel")
    return panel
