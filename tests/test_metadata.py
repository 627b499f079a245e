"""PNG metadata: the A1111 ``parameters`` text (write ↔ parse) and the verified ``workbench`` chunk."""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from workbench.backends.fake import fake_image
from workbench.config import public_uri
from workbench.errors import MetadataError
from workbench.hashing import canonical_json
from workbench.provenance.a1111 import (
    a1111_parameters,
    import_a1111,
    parse_a1111_parameters,
    request_from_a1111,
    unused_a1111_keys,
)
from workbench.provenance.png import FORMAT, encode_png, read_png_metadata, workbench_metadata
from workbench.provenance.schedulers import CLASS_CONFIG_KEYS, SCHEDULERS, a1111_names
from workbench.types import GeneratedImage, GenerationRequest


def req(**changes) -> GenerationRequest:  # type: ignore[no-untyped-def]
    fields = {"backend": "diffusers", "model": "embedded:tiny-sd", "prompt": "a red lighthouse", "seed": 7,
              "width": 64, "height": 96, "steps": 4, "guidance": 7.5}
    fields.update(changes)
    return GenerationRequest(**fields)


def png_for(request: GenerationRequest, *, run_id: str | None = "0" * 32,
            environment: dict[str, str] | None = None) -> bytes:
    result = GeneratedImage(request=request, image=fake_image(request), environment=environment or {"torch": "2.x"},
                            batch_size=3, batch_index=1)
    meta = workbench_metadata(result, run_id=run_id, tracking_uri="http://user:secret@mlflow.example:5000",
                              experiment_id="4")
    return encode_png(result.image, parameters=a1111_parameters(request), workbench=meta)


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of every chunk, in order."""
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        out.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return out


def rewrite_chunk(data: bytes, key: str, text: str) -> bytes:
    """``data`` with the text chunk ``key`` replaced by an iTXt holding ``text`` (CRCs valid)."""
    out = bytearray(data[:8])
    for kind, body in chunks(data):
        if kind in (b"tEXt", b"iTXt", b"zTXt") and body.split(b"\0", 1)[0] == key.encode():
            kind, body = b"iTXt", key.encode() + b"\0\0\0\0\0" + text.encode("utf-8")
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    return bytes(out)


# -- the A1111 text -------------------------------------------------------------------------------

PROMPTS = [
    "a red lighthouse",
    "a lighthouse, on a cliff, at dusk",
    "ratio 16:9, style: noir, time: 10:30",
    'a sign that says "OPEN", with \\backslashes\\ and "quotes"',
    "first line\nsecond line, with a comma\nthird: with a colon",
    "日本の灯台、夕暮れ — café crème, naïve 🎨",
    "Steps: 5, Seed: 3, Size: 1x1\nthe line above only looks like parameters",
    "",
]
NEGATIVES = ["", "blurry, lowres", "no text: none\nno watermark, \"ever\"", "ぼやけた"]


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("negative", NEGATIVES)
def test_a1111_text_round_trips_through_writer_and_parser(prompt: str, negative: str) -> None:
    original = req(prompt=prompt, negative_prompt=negative, scheduler="euler_a", guidance=12.0)
    text = a1111_parameters(original)
    parsed = parse_a1111_parameters(text)
    assert parsed["Prompt"] == prompt and parsed["Negative prompt"] == negative
    rebuilt = request_from_a1111(parsed)
    assert rebuilt.image_fields() == original.image_fields()
    assert rebuilt.run_key == original.run_key


def test_a1111_round_trip_keeps_every_parameter_and_template() -> None:
    original = req(scheduler="dpm++_2m_karras", seed=4294967295, guidance=3.25, steps=50, width=768, height=512,
                   backend="replicate", model="black-forest-labs/flux-schnell", template="photoreal",
                   template_version="ab12cd34")
    text = a1111_parameters(original)
    assert text.splitlines()[-1] == (
        'Steps: 50, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 3.25, Seed: 4294967295, Size: 768x512, '
        'Model: black-forest-labs/flux-schnell, Backend: replicate, Template: photoreal@ab12cd34')
    rebuilt = request_from_a1111(parse_a1111_parameters(text))
    assert rebuilt.run_key == original.run_key
    assert (rebuilt.template, rebuilt.template_version) == ("photoreal", "ab12cd34")
    unseeded = request_from_a1111(parse_a1111_parameters(a1111_parameters(req(seed=None, backend="openai"))))
    assert unseeded.seed is None and unseeded.backend == "openai"


@pytest.mark.parametrize("backend, options, written", [
    ("diffusers", {"clip_skip": 1}, "Clip skip: 2"),
    ("diffusers", {"clip_skip": 2, "eta": 0.3, "dtype": "bf16"}, 'Clip skip: 3, Workbench options: "{'),
    ("diffusers", {"clip_skip": 0}, "Workbench options: "),  # no A1111 equivalent of clip_skip 0
    ("openai", {"quality": "high", "background": "transparent"}, "Workbench options: "),
    ("replicate", {"deadline_s": 30, "go_fast": False}, "Workbench options: "),
])
def test_a1111_round_trip_keeps_backend_options(backend: str, options: dict, written: str) -> None:
    original = req(backend=backend, options=options)
    text = a1111_parameters(original)
    assert written in text.splitlines()[-1]
    rebuilt = request_from_a1111(parse_a1111_parameters(text))
    assert dict(rebuilt.options) == options and rebuilt.run_key == original.run_key
    assert not unused_a1111_keys(parse_a1111_parameters(text))


def test_a1111_options_that_are_not_json_say_so() -> None:
    text = "a cat\nSteps: 20, CFG scale: 7, Seed: 1, Size: 8x8, Model: m, Workbench options: {broken"
    with pytest.raises(MetadataError, match="not a JSON object"):
        request_from_a1111(parse_a1111_parameters(text))


REAL_A1111 = (
    "masterpiece, best quality, (a lighthouse:1.2) on a cliff, golden hour, <lora:add_detail:0.6>\n"
    "Negative prompt: (worst quality, low quality:1.4), watermark\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3837491625, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, VAE: vae-ft-mse-840000.safetensors, "
    "Denoising strength: 0.45, Clip skip: 2, Hires upscale: 2, Hires upscaler: R-ESRGAN 4x+, "
    'Lora hashes: "add_detail: 7c6bad76eb54", TI hashes: "EasyNegative: c74b4e810b03, bad-hands-5: aa7651be154c", '
    "Version: v1.10.1"
)


def test_a_real_a1111_text_parses_like_a1111_does() -> None:
    p = parse_a1111_parameters(REAL_A1111)
    assert p["Prompt"].startswith("masterpiece, best quality, (a lighthouse:1.2)")
    assert p["Negative prompt"] == "(worst quality, low quality:1.4), watermark"
    assert (p["Steps"], p["Sampler"], p["Schedule type"], p["CFG scale"], p["Seed"]) == (
        "28", "DPM++ 2M", "Karras", "6.5", "3837491625")
    assert (p["Size-1"], p["Size-2"], p["Size"]) == ("512", "768", "512x768")
    assert p["Model hash"] == "6ce0161689" and p["Clip skip"] == "2" and p["Version"] == "v1.10.1"
    # JSON-quoted values come back unquoted, commas and colons inside them intact
    assert p["Lora hashes"] == "add_detail: 7c6bad76eb54"
    assert p["TI hashes"] == "EasyNegative: c74b4e810b03, bad-hands-5: aa7651be154c"
    r = request_from_a1111(p, model="embedded:tiny-sd")
    assert (r.scheduler, r.steps, r.guidance, r.seed, r.width, r.height) == ("dpm++_2m_karras", 28, 6.5, 3837491625,
                                                                             512, 768)
    assert r.options == {"clip_skip": 1}  # A1111 "Clip skip: 2" = diffusers clip_skip=1 (penultimate layer)
    assert r.model == "embedded:tiny-sd" and r.backend == "diffusers"
    assert request_from_a1111(p).model == "v1-5-pruned-emaonly"
    unused = unused_a1111_keys(p)
    # a <lora:…> tag from another tool names no file here: reported, never silently dropped
    assert set(unused) == {"VAE hash", "VAE", "Denoising strength", "Hires upscale", "Hires upscaler",
                           "LoRA add_detail"}


def test_a1111_docstring_example_and_prompt_only_text() -> None:
    text = ("girl with an artist's beret, determined, blue eyes\nNegative prompt: ugly, fat\n"
            "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b")
    p = parse_a1111_parameters(text)
    assert p["Prompt"] == "girl with an artist's beret, determined, blue eyes" and p["Negative prompt"] == "ugly, fat"
    assert request_from_a1111(p, model="m/m").scheduler == "euler_a"
    # fewer than three pairs on the last line: it is part of the prompt, as in A1111
    only = parse_a1111_parameters("a cat\nstyle: noir, mood: calm")
    assert only == {"Prompt": "a cat\nstyle: noir, mood: calm", "Negative prompt": ""}


def test_a1111_texts_that_cannot_become_a_request_say_why() -> None:
    base = "a cat\nSteps: 20, Sampler: {}, CFG scale: 7, Seed: 1, Size: 512x512, Model: m/m"
    with pytest.raises(MetadataError, match="sampler 'DPM adaptive' has no equivalent here; known samplers: DDIM"):
        request_from_a1111(parse_a1111_parameters(base.format("DPM adaptive")))
    with pytest.raises(MetadataError, match="no 'Model'"):
        request_from_a1111(parse_a1111_parameters("a cat\nSteps: 20, CFG scale: 7, Seed: 1, Size: 8x8"))
    with pytest.raises(MetadataError, match="no 'Steps' value"):
        request_from_a1111(parse_a1111_parameters("a cat\nCFG scale: 7, Seed: 1, Size: 8x8, Model: m/m"))
    with pytest.raises(MetadataError, match="no 'Size: WIDTHxHEIGHT'"):
        request_from_a1111(parse_a1111_parameters("a cat\nSteps: 2, CFG scale: 7, Seed: 1, Model: m/m"))
    with pytest.raises(MetadataError, match="'CFG scale: high' is not a number"):
        request_from_a1111(parse_a1111_parameters("a\nSteps: 2, CFG scale: high, Seed: 1, Size: 8x8, Model: m/m"))


# -- the workbench chunk --------------------------------------------------------------------------

def test_the_batch_position_is_read_from_new_and_older_files() -> None:
    request = req()
    new = GeneratedImage(request=request, image=fake_image(request), batch_size=2, batch_index=1, batch_id="call-1")
    meta = read_png_metadata(encode_png(new.image, parameters="", workbench=workbench_metadata(
        new, run_id=None, tracking_uri=None)))
    assert meta.batch == {"size": 2, "index": 1, "id": "call-1"} and meta.batch_id == "call-1"
    assert meta.environment == {}  # the environment holds the setup only
    # Written before the call id moved under "batch": the runner had put it in the environment.
    old = GeneratedImage(request=request, image=fake_image(request), batch_size=2, batch_index=1,
                         environment={"batch_size": 2, "batch_index": 1, "batch_id": "call-0"})
    meta = read_png_metadata(encode_png(old.image, parameters="", workbench=workbench_metadata(
        old, run_id=None, tracking_uri=None)))
    assert meta.batch == {"size": 2, "index": 1} and meta.batch_id == "call-0"



def test_read_png_metadata_returns_both_chunks_verified(tmp_path: Path) -> None:
    request = req(prompt="日本の灯台, at dusk", negative_prompt="blurry", options={"dtype": "fp32"},
                  template="photoreal", variables={"subject": "lighthouse"}, experiment="sweep", factor="guidance",
                  level=7.5)
    data = png_for(request)
    path = tmp_path / "image.png"
    path.write_bytes(data)
    for source in (path, str(path), data):
        meta = read_png_metadata(source)
        assert meta.source == "workbench" and (meta.width, meta.height) == (64, 96)
        assert meta.request() == request and meta.run_key == request.run_key
        assert meta.run_id == "0" * 32 and meta.experiment_id == "4"
        assert meta.tracking_uri == "http://mlflow.example:5000"  # never the credentials
        assert meta.environment == {"torch": "2.x"} and meta.batch == {"size": 3, "index": 1}
        assert meta.a1111 is not None and meta.a1111["Prompt"] == request.prompt
        assert meta.workbench is not None and meta.workbench["format"] == FORMAT
    assert read_png_metadata(data).request(model="other/model").model == "other/model"
    with Image.open(io.BytesIO(data)) as img:  # and PIL reads the same chunks
        assert json.loads(img.info["workbench"])["run_key"] == request.run_key


def test_a1111_only_png_in_text_and_compressed_chunks() -> None:
    image = Image.new("RGB", (16, 8), "red")
    for zip_ in (False, True):
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", REAL_A1111, zip=zip_)  # latin-1: tEXt, or zTXt when zipped
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", pnginfo=info)
        kinds = {kind for kind, _ in chunks(buffer.getvalue())}
        assert (b"zTXt" if zip_ else b"tEXt") in kinds
        meta = read_png_metadata(buffer.getvalue())
        assert meta.source == "a1111" and meta.workbench is None and meta.run_id is None
        assert meta.parameters == REAL_A1111 and meta.environment == {} and meta.batch == {}
        assert meta.request(model="embedded:tiny-sd").seed == 3837491625


def plain_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buffer, format="PNG")
    return buffer.getvalue()


def test_not_a_png(tmp_path: Path) -> None:
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, format="JPEG")
    with pytest.raises(MetadataError, match=r"is not a PNG file \(it is a JPEG file\)"):
        read_png_metadata(jpeg.getvalue())
    with pytest.raises(MetadataError, match=r"is not a PNG file \(it is empty\)"):
        read_png_metadata(b"")
    with pytest.raises(MetadataError, match="no such file: '.*missing.png'"):
        read_png_metadata(tmp_path / "missing.png")


def test_stripped_metadata_is_named(tmp_path: Path) -> None:
    with Image.open(io.BytesIO(png_for(req()))) as img:  # re-saved by an editor: chunks dropped
        buffer = io.BytesIO()
        img.save(buffer, format="PNG")
    with pytest.raises(MetadataError, match="holds no generation metadata: no 'workbench' and no 'parameters'"):
        read_png_metadata(buffer.getvalue())
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "an editor")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=info)
    with pytest.raises(MetadataError, match=r"text chunks present: Software"):
        read_png_metadata(buffer.getvalue())


def test_truncated_and_corrupt_files_are_named() -> None:
    data = png_for(req())
    for cut in (len(data) - 12, len(data) - 1, len(data) // 2, 40, 9):
        with pytest.raises(MetadataError, match="is truncated") as info:
            read_png_metadata(data[:cut])
        assert "cut short" in str(info.value)
    idat = data.index(b"IDAT") + 10
    damaged = data[:idat] + bytes([data[idat] ^ 0xFF]) + data[idat + 1:]
    with pytest.raises(MetadataError, match="is corrupt: the checksum of its 'IDAT' chunk"):
        read_png_metadata(damaged)


def test_bad_workbench_chunks_are_named() -> None:
    data = png_for(req())
    with pytest.raises(MetadataError, match="'workbench' chunk of '<PNG bytes>' is not valid JSON"):
        read_png_metadata(rewrite_chunk(data, "workbench", '{"format": "workbench/1", "request": '))
    chunk = json.loads(read_png_metadata(data).texts["workbench"])
    with pytest.raises(MetadataError, match="has format 'workbench/99'; this version of the workbench reads"):
        read_png_metadata(rewrite_chunk(data, "workbench", canonical_json({**chunk, "format": "workbench/99"})))
    with pytest.raises(MetadataError, match="invalid: unknown request fields \\['colour'\\]"):
        read_png_metadata(rewrite_chunk(data, "workbench", canonical_json(
            {**chunk, "request": {**chunk["request"], "colour": "red"}})))


def test_a_tampered_prompt_is_caught() -> None:
    data = png_for(req(prompt="a red lighthouse"))
    chunk = json.loads(read_png_metadata(data).texts["workbench"])
    chunk["request"]["prompt"] = "a blue lighthouse"
    tampered = rewrite_chunk(data, "workbench", canonical_json(chunk))
    with pytest.raises(MetadataError, match="was tampered with") as info:
        read_png_metadata(tampered)
    message = str(info.value)
    assert "'a blue lighthouse'" in message and chunk["run_key"] in message and "0" * 32 in message
    assert read_png_metadata(tampered, verify=False).request().prompt == "a blue lighthouse"


@pytest.mark.parametrize("field, value", [("run_id", "f" * 32), ("tracking_uri", "http://elsewhere:5000"),
                                          ("environment", {"torch": "9.9"}), ("batch", {"size": 4, "index": 3})])
def test_edits_outside_the_request_are_caught_by_the_digest(field: str, value: object) -> None:
    data = png_for(req())
    chunk = json.loads(read_png_metadata(data).texts["workbench"])
    chunk[field] = value
    with pytest.raises(MetadataError, match="digest does not match"):
        read_png_metadata(rewrite_chunk(data, "workbench", canonical_json(chunk)))
    # a file written before chunks carried a digest is still read, and checked by its run key
    del chunk["digest"]
    assert read_png_metadata(rewrite_chunk(data, "workbench", canonical_json(chunk)))._get(field) == value


def test_public_uri_drops_credentials() -> None:
    assert public_uri("https://bob:pw@host:8443/mlflow?x=1") == "https://host:8443/mlflow?x=1"
    assert public_uri("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db" and public_uri(None) is None


# -- A1111 >= 1.9: Sampler + Schedule type ---------------------------------------------------------
# What A1111 writes (modules/sd_samplers_kdiffusion.py, sd_schedulers.py), read as A1111 >= 1.9 reads it:
# an old "X Karras" is X with Karras; no Schedule type is the sampler's default (Karras for DPM++ 2M).
A1111_SAMPLERS = [
    ("DPM++ 2M", "Karras", "dpm++_2m_karras"),
    ("DPM++ 2M", None, "dpm++_2m_karras"),
    ("DPM++ 2M", "Uniform", "dpm++_2m"),
    ("DPM++ 2M Karras", None, "dpm++_2m_karras"),
    ("DPM++ SDE", "Karras", "dpm++_sde_karras"),
    ("DPM++ SDE Karras", None, "dpm++_sde_karras"),
    ("DPM++ 2M SDE", None, "dpm++_2m_sde_exponential"),
    ("DPM++ 2M SDE", "Karras", "dpm++_2m_sde_karras"),
    ("DPM++ 2M SDE Karras", None, "dpm++_2m_sde_karras"),
    ("DPM++ 2M SDE Exponential", None, "dpm++_2m_sde_exponential"),
    ("Euler", "Karras", "euler_karras"),
    ("Euler", None, "euler"),
    ("Euler", "Normal", "euler"),
    ("Euler", "SGM Uniform", "euler_sgm_uniform"),
    ("Euler", "Beta", "euler_beta"),
    ("Euler a", None, "euler_a"),
    ("Euler a", "Simple", "euler_a_simple"),
    ("Heun", None, "heun"),
    ("Heun", "Exponential", "heun_exponential"),
    ("LMS", None, "lms"),
    ("LMS Karras", None, "lms_karras"),
    ("DPM2", None, "dpm2_karras"),
    ("DPM2 a Karras", None, "dpm2_a_karras"),
    ("DDIM", None, "ddim"),
    ("PLMS", None, "pndm"),
    ("UniPC", None, "unipc"),
    ("LCM", None, "lcm"),
]
A1111_UNMAPPED = [
    ("DPM++ 3M SDE", None, "'DPM++ 3M SDE' has no equivalent here"),
    ("DPM++ 3M SDE Karras", None, "'DPM++ 3M SDE' has no equivalent here"),
    ("DPM++ 2M SDE Heun", "Karras", "'DPM++ 2M SDE Heun' has no equivalent here"),
    ("DPM++ 2S a", None, "'DPM++ 2S a' has no equivalent here"),
    ("Restart", None, "'Restart' has no equivalent here"),
    ("DDIM CFG++", None, "'DDIM CFG++' has no equivalent here"),
    ("DPM fast", None, "'DPM fast' has no equivalent here"),
    ("Euler a", "Karras", "'Euler a' with schedule type 'Karras' has no diffusers equivalent: "
                          "EulerAncestralDiscreteScheduler takes no use_karras_sigmas"),
    ("Euler", "KL Optimal", "'KL Optimal' .* has no diffusers equivalent"),
    ("Euler", "Align Your Steps", "'Align Your Steps' .* has no diffusers equivalent"),
    ("Euler", "Sideways", "'Sideways' is not one A1111 has"),
    ("k_euler", None, "'k_euler' has no equivalent here; known samplers: DDIM"),
]


def a1111_text(sampler: str, schedule: str | None, version: str | None = "v1.10.1") -> str:
    pairs = [f"Sampler: {sampler}"] + ([f"Schedule type: {schedule}"] if schedule else [])
    tail = f", Version: {version}" if version else ""
    return f"a cat\nSteps: 20, {', '.join(pairs)}, CFG scale: 7, Seed: 1, Size: 512x512, Model: sd15{tail}"


@pytest.mark.parametrize(("sampler", "schedule", "scheduler"), A1111_SAMPLERS)
def test_every_a1111_sampler_and_schedule_reads_into_the_scheduler_it_means(
        sampler: str, schedule: str | None, scheduler: str) -> None:
    request = request_from_a1111(parse_a1111_parameters(a1111_text(sampler, schedule)))
    assert request.scheduler == scheduler
    assert scheduler in SCHEDULERS  # one the diffusers backend runs


@pytest.mark.parametrize(("sampler", "schedule", "message"), A1111_UNMAPPED)
def test_a1111_samplers_without_a_diffusers_equivalent_are_named(sampler: str, schedule: str | None,
                                                                 message: str) -> None:
    with pytest.raises(MetadataError, match=message if ".*" in message else re.escape(message)):
        request_from_a1111(parse_a1111_parameters(a1111_text(sampler, schedule)))


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_is_written_in_the_19_form_and_read_back(name: str) -> None:
    original = req(scheduler=name)
    text = a1111_parameters(original)
    sampler, schedule = a1111_names(name)
    pairs = parse_a1111_parameters(text)
    assert pairs["Sampler"] == sampler and pairs.get("Schedule type") == schedule
    assert request_from_a1111(pairs).run_key == original.run_key
    # What A1111 >= 1.9 would run from it (no Backend, no Version): the same sigmas
    foreign = text.replace(", Backend: diffusers", "")
    assert request_from_a1111(parse_a1111_parameters(foreign), backend="diffusers").scheduler == name


def test_the_schedule_type_is_written_whenever_a1111_would_assume_another() -> None:
    last = {name: a1111_parameters(req(scheduler=name)).splitlines()[-1] for name in
            ("dpm++_2m_karras", "dpm++_2m", "euler", "euler_karras", "dpm++_2m_sde", "ddim")}
    assert "Sampler: DPM++ 2M, Schedule type: Karras," in last["dpm++_2m_karras"]
    assert "Sampler: DPM++ 2M, Schedule type: Uniform," in last["dpm++_2m"]  # A1111 alone would use Karras
    assert "Sampler: Euler, CFG" in last["euler"]  # Euler's default is Uniform: nothing to say
    assert "Sampler: Euler, Schedule type: Karras," in last["euler_karras"]
    assert "Sampler: DPM++ 2M SDE, Schedule type: Uniform," in last["dpm++_2m_sde"]  # default: Exponential
    assert "Schedule type" not in last["ddim"]  # timestep samplers take none


def test_a_missing_schedule_type_is_read_by_who_wrote_the_text() -> None:
    def read(text: str) -> tuple[str | None, tuple[str, ...]]:
        imported = import_a1111(parse_a1111_parameters(text))
        return imported.request.scheduler, imported.notes

    new, notes = read(a1111_text("DPM++ 2M", None, "v1.10.1"))
    assert new == "dpm++_2m_karras" and "as written by A1111 v1.10.1" in notes[0]
    forge, _ = read(a1111_text("DPM++ 2M", None, "f2.0.1v1.10.1-previous-313-g2b2a7b3a"))
    assert forge == "dpm++_2m_karras"
    old, notes = read(a1111_text("DPM++ 2M", None, "v1.6.0"))
    assert old == "dpm++_2m" and "before 1.9" in notes[0] and "would read Karras" in notes[0]
    assert read(a1111_text("DPM++ 2M Karras", None, "v1.6.0"))[0] == "dpm++_2m_karras"
    unknown, notes = read(a1111_text("DPM++ 2M", None, None))
    assert unknown == "dpm++_2m_karras" and "no 'Version' says who wrote the text" in notes[0]
    # our own texts from before the 1.9 form: a plain "DPM++ 2M" was the Uniform schedule
    ours, _ = read("a cat\nSteps: 20, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1, Size: 8x8, Model: m, Backend: diffusers")
    assert ours == "dpm++_2m"
    assert read(a1111_text("Euler", None, None)) == ("euler", ())  # the same either way: no note
    ignored, notes = read(a1111_text("DDIM", "Karras"))
    assert ignored == "ddim" and "k-diffusion samplers only" in notes[0]


def test_scheduler_configs_are_ones_the_installed_diffusers_takes() -> None:
    import inspect

    import diffusers

    for name, entry in SCHEDULERS.items():
        cls = getattr(diffusers, entry.cls)
        accepted = set(inspect.signature(cls.__init__).parameters)
        assert set(entry.overrides) <= accepted, (name, set(entry.overrides) - accepted)
        assert CLASS_CONFIG_KEYS[entry.cls] <= accepted, entry.cls  # what decides which schedules are offered
        scheduler = cls.from_config({}, **entry.overrides)
        for key, value in entry.overrides.items():
            assert scheduler.config[key] == value, (name, key)
