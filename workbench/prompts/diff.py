"""What a backend did to the prompt: terms dropped, terms added, and a drift score. Pure, no I/O.

Some backends rewrite the prompt before drawing (OpenAI's dall-e-3 returns ``revised_prompt``). The
rewrite can silently drop something that was asked for, so every run with a revised prompt logs this
difference, and runs that lost a requested element are flagged.

How it compares:

- Text is normalised: Unicode NFKC, lower case, curly quotes and dashes made plain, runs of whitespace
  collapsed.
- *Phrases* are the comma-, semicolon- or newline-separated parts of a prompt (the way prompts are
  written: ``"a red fox, oil painting, 35mm lens"``).
- *Content words* are the words left after removing a small list of English function words ("a", "the",
  "of", "with", ...). Words are compared on a light stem (plural ``s``/``es``, ``ing``, ``ed`` removed), so
  "lights" matches "light" and "painted" matches "paint"; synonyms do not match ("lit" is not "lighting").
- A requested phrase is **dropped** when none of its content words appear in the revision; when only
  some are missing, those words are listed instead. ``added`` is the same the other way round.
- ``drift`` = 1 − Jaccard similarity of the two sets of content-word stems: 0 when the revision uses
  exactly the requested words (in any order), 1 when they share none.

Example:
    >>> d = diff_prompts("a red fox, oil painting, 35mm lens",
    ...                  "A detailed oil painting of a red fox at dawn.")
    >>> d.dropped
    ('35mm lens',)
    >>> d.added
    ('detailed', 'dawn')
    >>> d.dropped_elements, round(d.drift, 2)
    (True, 0.5)
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["PromptDiff", "diff_prompts", "normalise", "content_words", "phrases"]

# Function words that carry no visual element of their own.
STOPWORDS = frozenset("""
a an the this that these those some any each every of in on at to for from by with without into onto
over under above below behind beside between near through across around about against along among
and or but nor so yet as than then there here is are was were be been being it its it's his her their
our your my very just also which who whom whose while where when what how all both either neither
such own same other another up down out off again further once s
""".split())

_TRANSLATE = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
                            "\u2014": "-", "\u00a0": " "})
_WORD = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*")
_PHRASE_SPLIT = re.compile(r"[,;\n|]+")


def normalise(text: str) -> str:
    """NFKC, lower case, plain quotes and dashes, single spaces."""
    text = unicodedata.normalize("NFKC", text).translate(_TRANSLATE).lower()
    return " ".join(text.split())


def _stem(word: str) -> str:
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed"):
        return word[:-2]
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def content_words(text: str) -> list[str]:
    """The words of ``text`` (normalised) that are not function words, in order, with repeats."""
    return [w for w in _WORD.findall(normalise(text)) if w not in STOPWORDS]


def phrases(text: str) -> list[str]:
    """The comma/semicolon/newline-separated phrases of ``text``, normalised, without surrounding punctuation."""
    out = []
    for part in _PHRASE_SPLIT.split(text):
        part = normalise(part).strip(" .!?:\"'()[]{}")
        if part:
            out.append(part)
    return out


def _trim(phrase: str) -> str:
    """``phrase`` without leading or trailing function words ("a detailed" -> "detailed")."""
    words = phrase.split()
    while words and words[0] in STOPWORDS:
        words.pop(0)
    while words and words[-1] in STOPWORDS:
        words.pop()
    return " ".join(words)


def _one_way(source: str, other_stems: set[str]) -> tuple[str, ...]:
    """Phrases (or single words) of ``source`` whose content words are missing from ``other_stems``."""
    missing: list[str] = []
    for phrase in phrases(source):
        words = content_words(phrase)
        if not words:
            continue
        absent = [w for w in words if _stem(w) not in other_stems]
        if not absent:
            continue
        if len(absent) == len(words):
            missing.append(_trim(phrase))
        else:
            missing.extend(absent)
    # keep the first occurrence of each, in order
    return tuple(dict.fromkeys(missing))


@dataclass(frozen=True)
class PromptDiff:
    """The difference between a requested prompt and the prompt a backend actually used."""

    requested: str
    revised: str | None
    dropped: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    drift: float = 0.0

    @property
    def dropped_elements(self) -> bool:
        """True when something that was asked for is missing from the revision."""
        return bool(self.dropped)

    @property
    def revised_differs(self) -> bool:
        return self.revised is not None and normalise(self.revised) != normalise(self.requested)

    def to_text(self) -> str:
        """A readable report: both prompts, ``- dropped`` and ``+ added`` lines, and the drift score."""
        lines = [f"requested: {self.requested}"]
        if self.revised is None:
            lines.append("revised:   (none: the backend used the prompt as given)")
        else:
            lines.append(f"revised:   {self.revised}")
        lines.extend(f"- {term}" for term in self.dropped)
        lines.extend(f"+ {term}" for term in self.added)
        if self.revised is not None and not self.dropped and not self.added:
            lines.append("(same content words)")
        lines.append(f"drift: {self.drift:.2f} (1 - Jaccard similarity of content words)")
        if self.dropped_elements:
            lines.append(f"dropped elements: {len(self.dropped)}")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, object]:
        return {"requested": self.requested, "revised": self.revised, "dropped": list(self.dropped),
                "added": list(self.added), "drift": self.drift, "dropped_elements": self.dropped_elements}


def diff_prompts(requested: str, revised: str | None) -> PromptDiff:
    """Compare the requested prompt with the one the backend used (``None``: not rewritten).

    >>> diff_prompts("a cat", None).drift
    0.0
    """
    if revised is None:
        return PromptDiff(requested=requested, revised=None)
    req_stems = {_stem(w) for w in content_words(requested)}
    rev_stems = {_stem(w) for w in content_words(revised)}
    union = req_stems | rev_stems
    drift = 0.0 if not union else 1.0 - len(req_stems & rev_stems) / len(union)
    return PromptDiff(requested=requested, revised=revised, dropped=_one_way(requested, rev_stems),
                      added=_one_way(revised, req_stems), drift=round(drift, 4))
