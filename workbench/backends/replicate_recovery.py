"""Finding a prediction whose create was sent but never answered: the process died inside ``Prefer: wait``.

With ``Prefer: wait`` the create holds its answer until the prediction finishes (up to ``prefer_wait_s``),
and for a fast model that is the prediction's whole life: a ``workbench run`` killed then never saw the id,
so the journal (``replicate_journal.py``) holds only "a create was sent for this key at time T". Replicate
has no idempotency key, but it lists an account's predictions, newest first, with their inputs
(``GET /v1/predictions?created_after=…``, 100 a page). The next run looks there for a prediction of the
same model and version with exactly the inputs it would send (the seed among them), created since shortly
before T, that no other journal entry has claimed, and takes it up instead of paying for a new one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

__all__ = ["find_unanswered", "CLOCK_SLACK_S", "MAX_PAGES"]

# Replicate's created_at is its clock, T is ours: look this much earlier so a skewed clock misses nothing.
CLOCK_SLACK_S = 60.0
MAX_PAGES = 5  # 500 predictions: more than a sweep's in-flight creates; a busy account's search stops here

Call = Callable[[str, str], tuple[int, "dict[str, Any] | None", Any]]


def find_unanswered(call: Call, host: str, *, model: str, version: str | None, inputs: dict[str, Any],
                    sent_at: float, exclude: Iterable[str] = ()) -> str | None:
    """The id of the prediction an unanswered create made, or None where none can be told apart.

    ``call(method, path_or_url)`` is the backend's raw API call; ``host`` the API's host, so that a
    ``next`` link elsewhere is not followed with the token; ``version`` None for an official model's
    route (the prediction's ``version`` is then Replicate's, not ours to compare).
    """
    taken = set(exclude)
    since = datetime.fromtimestamp(sent_at - CLOCK_SLACK_S, UTC)
    url: str | None = f"/v1/predictions?created_after={since.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"
    for _ in range(MAX_PAGES):
        if url is None:
            return None
        status, page, _ = call("GET", url)
        if status != 200 or page is None:
            return None  # the list is a courtesy: without it the image is made anew, as before
        for prediction in page.get("results") or []:
            if _created(prediction) < since:
                return None  # newest first: everything after this is older still
            if _matches(call, prediction, model=model, version=version, inputs=inputs, taken=taken):
                return str(prediction["id"])
        url = _same_host(page.get("next"), host)
    return None


def _matches(call: Call, prediction: dict[str, Any], *, model: str, version: str | None,
             inputs: dict[str, Any], taken: set[str]) -> bool:
    pid = prediction.get("id")
    if not pid or pid in taken or prediction.get("model") != model:
        return False
    if version is not None and prediction.get("version") != version:
        return False
    if prediction.get("source", "api") != "api":
        return False
    seen = prediction.get("input")
    if not seen:  # a list entry without its inputs: ask for the prediction itself
        status, full, _ = call("GET", f"/v1/predictions/{pid}")
        seen = (full or {}).get("input") if status == 200 else None
    return bool(seen) and seen == inputs


def _created(prediction: dict[str, Any]) -> datetime:
    text = str(prediction.get("created_at") or "")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)  # unknown: never the reason to stop looking


def _same_host(url: object, host: str) -> str | None:
    if not isinstance(url, str) or not url:
        return None
    return url if urlsplit(url).netloc in ("", host) else None
