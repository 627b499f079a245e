"""The AUTOMATIC1111 ``parameters`` text: write it, parse it, and turn it back into a request.

The format A1111, Forge, civitai and friends read and write in a PNG's ``parameters`` text chunk: the
prompt, ``Negative prompt: …``, then one line of ``Key: value`` pairs::

    a red lighthouse
    Negative prompt: blurry
    Steps: 30, Sampler: Euler a, CFG scale: 7.0, Seed: 7, Size: 512x768, Model: sd15, Backend: diffusers

``a1111_parameters`` writes it for a request, in the form A1111 >= 1.9 writes (``Sampler: DPM++ 2M,
Schedule type: Karras``); ``parse_a1111_parameters`` follows A1111's own parser
(``modules/infotext_utils.py``); ``request_from_a1111`` turns its result into a request we can run, and
``unused_a1111_keys`` names what that request does not reproduce; ``import_a1111`` does both and says how
the sampler was read. Pure text: ``png.py`` puts it in and reads it out of PNG files.

What no ``Schedule type`` means depends on who wrote the text. A1111 >= 1.9 reads it as ``Automatic``: the
sampler's own default (Karras for ``DPM++ 2M``). Before 1.9 the schedule was part of the sampler's name
(``DPM++ 2M Karras``), so a plain ``DPM++ 2M`` meant Uniform; so did our own texts, before this writer. The
``Version`` field (``v1.10.1``; Forge's ``f2.0.1v1.10.1-...``) or our ``Backend`` field decide; a text with
neither is read as A1111 >= 1.9 reads it, and the note says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from ..errors import MetadataError
from ..hashing import canonical_json
from ..types import GenerationRequest, Lora
from .imported import Imported
from .schedulers import SCHEDULERS, A1111Unmapped, a1111_default_schedule, a1111_names, scheduler_from_a1111

__all__ = ["a1111_parameters", "parse_a1111_parameters", "request_from_a1111", "unused_a1111_keys",
           "import_a1111", "read_a1111_scheduler", "A1111_USED_KEYS", "A1111_INFO_KEYS", "OPTIONS_KEY",
           "WEIGHTS_KEY", "LORAS_KEY", "lora_tags"]

# Our backend options that A1111 has no key for, as canonical JSON: other tools show it and skip it.
OPTIONS_KEY = "Workbench options"
# Our weights hash (GenerationRequest.model_hash). Not A1111's "Model hash": that one hashes a checkpoint file.
WEIGHTS_KEY = "Weights hash"
# Our LoRAs in full (name, source, weight name, scale, hash) as canonical JSON, so our own reader rebuilds them;
# A1111's own words for them are the <lora:NAME:SCALE> tags in the prompt and "Lora hashes".
LORAS_KEY = "Workbench loras"
# A1111's extra-network tag (modules/extra_networks.py): <lora:NAME:SCALE>, stripped from the prompt before encoding.
_RE_LORA_TAG = re.compile(r"\s*<lora:([^:>]+)(?::([^:>]*))?(?::[^>]*)?>")
# A1111's own regex (modules/infotext_utils.py): "Key: value" pairs, values optionally JSON-quoted.
_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")
# "v1.10.1", "v1.7.0-225-g...", Forge's "f2.0.1v1.10.1-previous-...": A1111's own version follows a "v".
_RE_VERSION = re.compile(r"v(\d+)\.(\d+)")

# Keys ``request_from_a1111`` turns into the request; the rest are reported as not reproduced.
A1111_USED_KEYS = frozenset({"Prompt", "Negative prompt", "Steps", "Sampler", "Schedule type", "CFG scale", "Seed",
                             "Size", "Size-1", "Size-2", "Model", "Backend", "Template", "Clip skip", OPTIONS_KEY,
                             WEIGHTS_KEY, LORAS_KEY})
# Keys that describe the image but do not change it.
A1111_INFO_KEYS = frozenset({"Model hash", "Version", "Hashes", "Lora hashes", "TI hashes", "Emphasis", "Pad conds",
                             "Downcast alphas_cumprod", "Token merging ratio", "Operations"})


def _quote(value: Any) -> str:
    # A1111's own rule (modules/generation_parameters_copypaste.quote): JSON-quote when needed.
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text and '"' not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def a1111_parameters(request: GenerationRequest, extra: Mapping[str, Any] | None = None) -> str:
    """The ``parameters`` text A1111 writes and parses for ``request``."""
    pairs: dict[str, Any] = {"Steps": request.steps}
    sampler, schedule = a1111_names(request.scheduler)
    if sampler:
        pairs["Sampler"] = sampler
    if schedule:
        pairs["Schedule type"] = schedule
    pairs["CFG scale"] = float(request.guidance)
    pairs["Seed"] = request.seed if request.seed is not None else -1
    pairs["Size"] = f"{request.width}x{request.height}"
    pairs["Model"] = request.model
    if request.model_hash:
        pairs[WEIGHTS_KEY] = request.model_hash
    pairs["Backend"] = request.backend
    if request.template:
        pairs["Template"] = f"{request.template}@{request.template_version}"
    options = dict(request.options)
    clip_skip = options.get("clip_skip")
    if request.backend == "diffusers" and isinstance(clip_skip, int) and not isinstance(clip_skip, bool) \
            and clip_skip >= 1:
        pairs["Clip skip"] = options.pop("clip_skip") + 1  # A1111 counts the last layer as 1, diffusers as 0
    if options:
        pairs[OPTIONS_KEY] = canonical_json(options)
    active = [lora for lora in request.loras if lora.enabled]
    if active:
        # A1111's forms: "<lora:name:scale>" in the prompt, "Lora hashes" with the first 12 hex of its hash.
        pairs["Lora hashes"] = ", ".join(f"{lora.name}: {lora.hash[:12]}" for lora in active if lora.hash) or None
        pairs[LORAS_KEY] = canonical_json([lora.to_dict() for lora in active])
    pairs.update(extra or {})
    lines = [request.prompt + "".join(f" <lora:{lora.name}:{float(lora.scale):g}>" for lora in active)]
    if request.negative_prompt:
        lines.append(f"Negative prompt: {request.negative_prompt}")
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in pairs.items() if v is not None))
    return "\n".join(lines)


def _unquote(text: str) -> str:
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, str) else text


def parse_a1111_parameters(text: str) -> dict[str, str]:
    """Parse an A1111 ``parameters`` text the way A1111's ``parse_generation_parameters`` does.

    Returns ``Prompt``, ``Negative prompt`` and every ``Key: value`` pair of the last line (values
    unquoted, all strings). As in A1111, a ``WxH`` value is also split into ``Key-1`` / ``Key-2``; unlike
    A1111, the original ``Key`` is kept too. Like A1111, lines are stripped: leading and trailing
    whitespace of a prompt line does not survive the format.

    >>> p = parse_a1111_parameters('a cat, "cute"\\nNegative prompt: blurry\\nSteps: 20, Sampler: Euler a, '
    ...                            'CFG scale: 7, Seed: 42, Size: 512x768, Model: "sd:v1"')
    >>> p["Prompt"], p["Negative prompt"], p["Steps"], p["Size-2"], p["Model"]
    ('a cat, "cute"', 'blurry', '20', '768', 'sd:v1')
    """
    result: dict[str, str] = {}
    *lines, last = text.strip().split("\n")
    if len(_RE_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    done_with_prompt = False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        (negative if done_with_prompt else prompt).append(line)
    result["Prompt"] = "\n".join(prompt)
    result["Negative prompt"] = "\n".join(negative)
    for key, value in _RE_PARAM.findall(last):
        value = _unquote(value) if value[:1] == '"' and value[-1:] == '"' else value
        result[key] = value
        size = _RE_IMAGESIZE.match(value)
        if size:
            result[f"{key}-1"], result[f"{key}-2"] = size.group(1), size.group(2)
    return result


def _number(params: Mapping[str, str], key: str, kind: type, default: Any = None) -> Any:
    raw = params.get(key)
    if raw is None or str(raw).strip() == "":
        if default is not None:
            return default
        raise MetadataError(f"the A1111 parameters have no '{key}' value; it is needed to rebuild the request")
    try:
        return kind(float(raw)) if kind is int and "." in str(raw) else kind(raw)
    except ValueError:
        raise MetadataError(f"the A1111 parameter '{key}: {raw}' is not a number") from None


def request_from_a1111(params: Mapping[str, str], *, backend: str | None = None,
                       model: str | None = None) -> GenerationRequest:
    """A request we can run, from parsed A1111 parameters (see ``parse_a1111_parameters``).

    Steps, CFG scale, Seed and Size are required. Sampler and ``Schedule type`` map to our scheduler names
    (``read_a1111_scheduler``); ``Clip skip: N`` becomes the diffusers option
    ``clip_skip: N-1``. ``backend`` defaults to the text's ``Backend`` (ours writes it), else diffusers;
    ``model`` replaces the text's ``Model``, which is required otherwise.

    >>> r = request_from_a1111(parse_a1111_parameters("a fox\\nSteps: 20, Sampler: Euler a, CFG scale: 7, "
    ...                        "Seed: 5, Size: 512x768, Model: sd15"), model="embedded:tiny-sd")
    >>> r.scheduler, r.guidance, r.seed, (r.width, r.height), r.model
    ('euler_a', 7.0, 5, (512, 768), 'embedded:tiny-sd')
    """
    backend = backend or params.get("Backend") or "diffusers"
    model = model or params.get("Model")
    if not model:
        raise MetadataError("the A1111 parameters name no 'Model'; say which model to use (model=..., or "
                            "--model on the command line)")
    scheduler, _ = read_a1111_scheduler(params)
    seed = _number(params, "Seed", int)
    if "Size-1" not in params or "Size-2" not in params:
        raise MetadataError(f"the A1111 parameters have no 'Size: WIDTHxHEIGHT' value (got {params.get('Size')!r}); "
                            f"it is needed to rebuild the request")
    width, height = _number(params, "Size-1", int), _number(params, "Size-2", int)
    options: dict[str, Any] = _options(params)
    clip_skip = params.get("Clip skip")
    if clip_skip and backend == "diffusers" and _number(params, "Clip skip", int) > 1:
        options["clip_skip"] = _number(params, "Clip skip", int) - 1
    prompt, _tags = lora_tags(params.get("Prompt", ""))
    template, template_version = None, None
    if params.get("Template"):
        template, _, version = params["Template"].partition("@")
        template_version = version if version and version != "None" else None
    return GenerationRequest(
        backend=backend, model=model, prompt=prompt, loras=_loras(params),
        negative_prompt=params.get("Negative prompt", ""), seed=None if seed < 0 else seed, width=width,
        height=height, steps=_number(params, "Steps", int), guidance=_number(params, "CFG scale", float),
        scheduler=scheduler, options=options, template=template, template_version=template_version,
        # Another model than the file's: its weights are not the ones the hash names.
        model_hash=params.get(WEIGHTS_KEY) or None if model == params.get("Model") else None)


def lora_tags(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    """The prompt without its ``<lora:NAME:SCALE>`` tags (A1111 strips them before encoding), and the tags."""
    tags = []
    for name, scale in _RE_LORA_TAG.findall(prompt):
        try:
            tags.append((name, float(scale) if scale else 1.0))
        except ValueError:
            raise MetadataError(f"the LoRA tag <lora:{name}:{scale}> has no number for its scale") from None
    return _RE_LORA_TAG.sub("", prompt).strip(), tags


def _loras(params: Mapping[str, str]) -> tuple[Lora, ...]:
    raw = params.get(LORAS_KEY)
    if not raw:
        return ()
    try:
        entries = json.loads(raw)
        return tuple(Lora(**entry) for entry in entries)
    except (json.JSONDecodeError, TypeError) as exc:
        raise MetadataError(f"the A1111 parameter '{LORAS_KEY}' is not a list of LoRAs ({exc}); the file was "
                            f"edited or written by another tool") from None


def _options(params: Mapping[str, str]) -> dict[str, Any]:
    raw = params.get(OPTIONS_KEY)
    if not raw:
        return {}
    try:
        options = json.loads(raw)
    except json.JSONDecodeError:
        options = None
    if not isinstance(options, dict):
        raise MetadataError(f"the A1111 parameter '{OPTIONS_KEY}: {raw[:200]}' is not a JSON object; the file "
                            f"was edited or written by another tool")
    return options


def unused_a1111_keys(params: Mapping[str, str]) -> dict[str, str]:
    """The A1111 parameters a request built by ``request_from_a1111`` does not reproduce (hires fix, LoRAs
    named only by A1111's tags: their files are not in the text)."""
    unused = {k: v for k, v in params.items() if k not in A1111_USED_KEYS and k not in A1111_INFO_KEYS
              and not (k.endswith(("-1", "-2")) and k[:-2] in params)}
    if not params.get(LORAS_KEY):
        hashes = params.get("Lora hashes", "")
        for name, scale in lora_tags(params.get("Prompt", ""))[1]:
            unused[f"LoRA {name}"] = f"scale {scale:g}" + (f" (Lora hashes: {hashes})" if hashes else "") + \
                "; the text names no file: add it to a spec's loras to use it"
    return unused


def _automatic_means(params: Mapping[str, str]) -> tuple[Literal["sampler-default", "uniform"], str]:
    """How to read a missing ``Schedule type``, and who is taken to have written the text."""
    if params.get("Backend"):  # ours: the writer before 1.9's form wrote the schedule into the sampler name
        return "uniform", "the workbench"
    version = params.get("Version") or ""
    found = _RE_VERSION.search(version)
    if found:
        major, minor = int(found.group(1)), int(found.group(2))
        if (major, minor) < (1, 9):
            return "uniform", f"A1111 {version} (before 1.9)"
        return "sampler-default", f"A1111 {version}"
    return "sampler-default", ""


def read_a1111_scheduler(params: Mapping[str, str]) -> tuple[str | None, list[str]]:
    """Our scheduler for the text's ``Sampler`` and ``Schedule type``, and notes on how they were read.

    Raises ``MetadataError`` naming a sampler or schedule type with no diffusers equivalent.
    """
    sampler = (params.get("Sampler") or "").strip()
    if not sampler:
        return None, []
    schedule = (params.get("Schedule type") or "").strip() or None
    means, writer = _automatic_means(params)
    try:
        name = scheduler_from_a1111(sampler, schedule, automatic=means)
    except A1111Unmapped as exc:
        raise MetadataError(str(exc)) from None
    notes: list[str] = []
    if not SCHEDULERS[name].sampler.sigma_schedules and schedule and schedule.lower() != "automatic":
        notes.append(f"'Schedule type: {schedule}' is ignored: A1111 applies it to k-diffusion samplers only, "
                     f"not to '{sampler}'")
    if schedule is None or schedule.lower() == "automatic":
        as_19, as_before = (scheduler_from_a1111(sampler, automatic=m) for m in ("sampler-default", "uniform"))
        default = a1111_default_schedule(as_before)
        if as_19 != as_before and means == "sampler-default":  # the reading depends on who wrote the text
            notes.append(f"no 'Schedule type' with sampler '{sampler}': read as A1111 >= 1.9 reads it, the "
                         f"sampler's default schedule ({default}, scheduler '{as_19}')"
                         + (f", as written by {writer}" if writer else
                            f"; no 'Version' says who wrote the text: before A1111 1.9 it meant Uniform "
                            f"(scheduler '{as_before}')"))
        elif as_19 != as_before:
            notes.append(f"no 'Schedule type' with sampler '{sampler}', written by {writer}: that meant the "
                         f"Uniform schedule (scheduler '{as_before}'); A1111 >= 1.9 would read {default}")
    return name, notes


def import_a1111(params: Mapping[str, str], *, backend: str | None = None, model: str | None = None) -> Imported:
    """The request an A1111 text describes, what it does not reproduce, and how its sampler was read."""
    request = request_from_a1111(params, backend=backend, model=model)
    _, notes = read_a1111_scheduler(params)
    return Imported("a1111", request, unused_a1111_keys(params), tuple(notes))
