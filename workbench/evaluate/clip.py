"""CLIP score: how well an image matches its prompt, under a CLIP model the user names.

``clip_score = 100 · max(cos(image embedding, prompt embedding), 0)`` (Hessel et al.'s CLIPScore without
its 2.5 weight, as torchmetrics computes it): 0 for no match, about 30–35 for a good photo and caption
under ViT-B/32. The prompt is the one the workbench asked for (not a backend's rewrite: the question is
whether the image follows what the user wanted), cut at the model's 77 tokens.

The model is a ``transformers`` ``CLIPModel`` named by a hub id (``openai/clip-vit-base-patch32``,
optionally ``@revision``) or a local folder saved with ``save_pretrained`` (model, tokenizer and image
processor). Offline (``HF_HUB_OFFLINE=1`` or ``TRANSFORMERS_OFFLINE=1``) a hub id is read from the local
Hugging Face cache only; a model that is not there is a ``ScoringModelError`` naming it and the fix.
A model is loaded once per process and device and shared by every thread (one lock around the tokenizer
and the forward pass: Hugging Face tokenizers are not safe to call from two threads at once). Its id and
a hash of its weights (``models.weights.weights_hash``) are recorded on every run it scores.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MissingDependencyError, ScoringModelError
from ..models.embedded import quiet_hf_logging
from ..models.weights import weights_hash
from ..tracking.schema import (
    CLIP_HASH_PARAM,
    CLIP_HASH_TAG,
    CLIP_MODEL_PARAM,
    CLIP_MODEL_TAG,
    CLIP_SCORE_METRIC,
)
from ..types import GenerationRequest

if TYPE_CHECKING:
    from PIL import Image

    from ..tracking.schema import RunRecord

__all__ = ["ClipScorer", "clip_source", "clip_scores", "is_offline"]

_FIX = ("pass a hub id such as openai/clip-vit-base-patch32, or a local folder holding a CLIPModel saved "
        "with save_pretrained (with its tokenizer and preprocessor_config.json)")
_TRUE = {"1", "true", "yes", "on"}


def is_offline() -> bool:
    """Whether Hugging Face is told to stay off the network (then hub ids come from the local cache only)."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in names)


def clip_source(model: str) -> tuple[str, str | None, bool]:
    """(what ``from_pretrained`` takes, revision, whether it is a local folder) for a CLIP model name.

    Example:
        >>> clip_source("openai/clip-vit-base-patch32@main")
        ('openai/clip-vit-base-patch32', 'main', False)
    """
    path = Path(model).expanduser()
    if path.exists():
        if not (path.is_dir() and (path / "config.json").is_file()):
            raise ScoringModelError(f"CLIP model '{model}' is a path but not a folder with a config.json; "
                                    f"{_FIX}")
        return str(path.resolve()), None, True
    repo, _, revision = model.partition("@")
    if repo.count("/") != 1 or repo.startswith(("/", ".", "~")) or repo.endswith("/"):
        raise ScoringModelError(f"CLIP model '{model}' is neither a local folder nor a hub id like "
                                f"'owner/name'; {_FIX}")
    return repo, revision or None, False


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    processor: Any
    device: str
    max_tokens: int
    weights_hash: str | None
    lock: threading.Lock


_loaded: OrderedDict[tuple[str, str | None, str], _Loaded] = OrderedDict()
_loading = threading.Lock()
_KEEP = 2  # models kept loaded per process (a CLIP ViT-L is 1.7 GB)


def _device() -> str:
    import torch

    wanted = os.environ.get("WORKBENCH_DEVICE")
    if wanted:
        return wanted
    return "cuda" if torch.cuda.is_available() else "cpu"


def _load(model: str) -> _Loaded:
    source, revision, local = clip_source(model)
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "transformers", "diffusers") from None
    device = _device()
    key = (source, revision, device)
    with _loading:  # two sweeps (or two logging threads) asking at once load it once
        if key in _loaded:
            _loaded.move_to_end(key)
            return _loaded[key]
        quiet_hf_logging()
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, CLIPModel

        offline = is_offline() and not local
        options = {"revision": revision, "local_files_only": offline}
        try:
            config = AutoConfig.from_pretrained(source, **options)
            if config.model_type != "clip":
                raise ScoringModelError(f"CLIP model '{model}' is a '{config.model_type}' model, not a CLIP "
                                        f"model (a CLIPModel with text and vision towers); {_FIX}")
            clip = CLIPModel.from_pretrained(source, **options).to(device).eval()
            tokenizer = AutoTokenizer.from_pretrained(source, **options)
            processor = AutoImageProcessor.from_pretrained(source, **options)
        except ScoringModelError:
            raise
        except (OSError, ValueError) as exc:
            if offline:
                raise ScoringModelError(
                    f"CLIP model '{model}' is not in the local Hugging Face cache, and the hub is off "
                    f"limits (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set); download it once where there is a "
                    f"network (huggingface-cli download {source}), point HF_HOME at a cache that holds it, "
                    f"or pass a local folder saved with save_pretrained") from exc
            raise ScoringModelError(f"could not load CLIP model '{model}': {str(exc)[:400]}; {_FIX}") from exc
        max_tokens = min(int(getattr(tokenizer, "model_max_length", 77) or 77),
                         int(clip.config.text_config.max_position_embeddings))
        snapshot = source if local else _snapshot(source, revision)
        loaded = _Loaded(model=clip, tokenizer=tokenizer, processor=processor, device=device,
                         max_tokens=max_tokens, weights_hash=weights_hash(snapshot) if snapshot else None,
                         lock=threading.Lock())
        _loaded[key] = loaded
        while len(_loaded) > _KEEP:
            _loaded.popitem(last=False)
        return loaded


def _snapshot(repo: str, revision: str | None) -> str | None:
    """The cache folder a hub id was loaded from (its weights are hashed like a local folder's)."""
    try:
        from huggingface_hub import snapshot_download

        return str(snapshot_download(repo, revision=revision, local_files_only=True))
    except Exception:  # loaded, but not from a snapshot we can find: record the id only
        return None


def _scores(loaded: _Loaded, prompts: Sequence[str], images: Sequence[Image.Image]) -> list[float]:
    import torch

    with loaded.lock, torch.inference_mode():
        text = loaded.tokenizer(list(prompts), padding=True, truncation=True, max_length=loaded.max_tokens,
                                return_tensors="pt")
        pixels = loaded.processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        out = loaded.model(input_ids=text["input_ids"].to(loaded.device),
                           attention_mask=text["attention_mask"].to(loaded.device),
                           pixel_values=pixels["pixel_values"].to(loaded.device, loaded.model.dtype))
        image_embeds = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
        text_embeds = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
        cosine = (image_embeds * text_embeds).sum(-1)
    return [100.0 * max(float(c), 0.0) for c in cosine.cpu()]


def clip_scores(model: str, prompts: Sequence[str], images: Sequence[Image.Image]) -> list[float]:
    """The CLIP score of each image against its prompt, under ``model`` (a hub id or a local folder).

    Example:
        >>> clip_scores("openai/clip-vit-base-patch32", ["a red circle"], [image])  # doctest: +SKIP
        [31.2]
    """
    if len(prompts) != len(images):
        raise ValueError(f"one prompt per image: got {len(prompts)} prompts and {len(images)} images")
    return _scores(_load(model), prompts, images) if images else []


class ClipScorer:
    """The CLIP score as a ``scoring.Scorer``: every image, against the prompt the workbench asked for."""

    name = "CLIP score"
    metrics = (CLIP_SCORE_METRIC,)
    applies_to = "every image"

    def __init__(self, model: str) -> None:
        self.model = model
        self._loaded: _Loaded | None = None
        self._folder_hash: str | None = None

    def check(self) -> None:
        """Fail now, without loading anything, for a name that can be neither a folder nor a hub id."""
        clip_source(self.model)

    def load(self) -> None:
        """Load the model now (once per process): a model that is not there fails before anything runs."""
        if self._loaded is None:
            self._loaded = _load(self.model)

    @property
    def weights_hash(self) -> str | None:
        if self._loaded is not None:
            return self._loaded.weights_hash
        source, _, local = clip_source(self.model)
        if local and self._folder_hash is None:
            self._folder_hash = weights_hash(source)
        return self._folder_hash  # a hub id's snapshot is known once it is loaded

    def applies(self, request: GenerationRequest) -> bool:
        return True

    def score(self, requests: Sequence[GenerationRequest], images: Sequence[Image.Image]
              ) -> list[dict[str, float]]:
        self.load()
        assert self._loaded is not None
        values = _scores(self._loaded, [r.prompt for r in requests], images)
        return [{CLIP_SCORE_METRIC: v} for v in values]

    def tags(self) -> dict[str, str]:
        """What each scored run records about the model (tags: a later rescoring may change them)."""
        digest = self.weights_hash
        return {CLIP_MODEL_TAG: self.model, **({CLIP_HASH_TAG: digest} if digest else {})}

    def parent_params(self) -> dict[str, str]:
        digest = self.weights_hash
        return {CLIP_MODEL_PARAM: self.model, **({CLIP_HASH_PARAM: digest} if digest else {})}

    def scored(self, record: RunRecord) -> bool:
        """Already scored by this model: the same weights where both hashes are known, else the same name."""
        if CLIP_SCORE_METRIC not in record.metrics:
            return False
        digest, logged = self.weights_hash, record.tags.get(CLIP_HASH_TAG)
        if digest and logged:
            return digest == logged
        return record.tags.get(CLIP_MODEL_TAG) == self.model
