"""Other tools' PNGs (A1111, ComfyUI, InvokeAI) and ours, read by us and by a parser we did not write.

``sd-parsers`` (PyPI, the ``test`` extra) reads the same files: our PNGs and A1111-format texts must mean
the same to it as to us, and the ComfyUI and InvokeAI files built here must be ones it recognises as such
(so they are shaped as those tools write them, not as we imagine them).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image, PngImagePlugin

from workbench.backends import registry
from workbench.backends.fake import fake_image
from workbench.cli import cli
from workbench.errors import MetadataError
from workbench.provenance.a1111 import a1111_parameters, import_a1111, parse_a1111_parameters
from workbench.provenance.comfyui import read_comfyui
from workbench.provenance.invokeai import read_invokeai
from workbench.provenance.png import encode_png, read_png_metadata, workbench_metadata
from workbench.reproduce.regenerate import reproduce
from workbench.types import GeneratedImage, GenerationRequest

sd_parsers = pytest.importorskip("sd_parsers", reason="sd-parsers is in the 'test' extra")


def invoke(*args: Any):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def png_with(texts: dict[str, str], size: tuple[int, int] = (64, 64), image: Image.Image | None = None) -> bytes:
    """A PNG with these tEXt chunks, as PIL's ``add_text`` writes them (ComfyUI, InvokeAI and A1111 do)."""
    info = PngImagePlugin.PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    (image or Image.new("RGB", size, "gray")).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def theirs(data: bytes) -> Any:
    info = sd_parsers.ParserManager().parse(io.BytesIO(data))
    assert info is not None, "sd-parsers found no metadata"
    return info


# -- ComfyUI: SaveImage writes "prompt" (the API graph) and "workflow" (the editor's document) ------------

def comfy_graph(*, seed: int = 156680208700286, steps: int = 20, cfg: float = 8.0, sampler: str = "dpmpp_2m",
                scheduler: str = "karras", ckpt: str = "v1-5-pruned-emaonly.safetensors", width: int = 512,
                height: int = 512, positive: str = "beautiful scenery nature glass bottle landscape, purple galaxy",
                negative: str = "text, watermark", clip_layer: int | None = None) -> dict[str, str]:
    """ComfyUI's default text-to-image graph, as its SaveImage node embeds it."""
    clip = ["10", 0] if clip_layer else ["4", 1]
    prompt: dict[str, Any] = {
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler, "denoise": 1.0,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": clip}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": clip}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }
    links = [[1, 4, 0, 3, 0, "MODEL"], [2, 5, 0, 3, 3, "LATENT"], [4, 6, 0, 3, 1, "CONDITIONING"],
             [6, 7, 0, 3, 2, "CONDITIONING"], [7, 3, 0, 8, 0, "LATENT"], [8, 4, 2, 8, 1, "VAE"],
             [9, 8, 0, 9, 0, "IMAGE"]]
    links += [[3, 10, 0, 6, 0, "CLIP"], [5, 10, 0, 7, 0, "CLIP"], [10, 4, 1, 10, 0, "CLIP"]] if clip_layer else [
        [3, 4, 1, 6, 0, "CLIP"], [5, 4, 1, 7, 0, "CLIP"]]
    nodes = [
        {"id": 3, "type": "KSampler", "inputs": [{"name": "model", "link": 1}, {"name": "positive", "link": 4},
                                                 {"name": "negative", "link": 6}, {"name": "latent_image", "link": 2}],
         "widgets_values": [seed, "randomize", steps, cfg, sampler, scheduler, 1.0]},
        {"id": 4, "type": "CheckpointLoaderSimple", "inputs": [], "widgets_values": [ckpt]},
        {"id": 5, "type": "EmptyLatentImage", "inputs": [], "widgets_values": [width, height, 1]},
        {"id": 6, "type": "CLIPTextEncode", "inputs": [{"name": "clip", "link": 3}], "widgets_values": [positive]},
        {"id": 7, "type": "CLIPTextEncode", "inputs": [{"name": "clip", "link": 5}], "widgets_values": [negative]},
        {"id": 8, "type": "VAEDecode", "inputs": [{"name": "samples", "link": 7}, {"name": "vae", "link": 8}]},
        {"id": 9, "type": "SaveImage", "inputs": [{"name": "images", "link": 9}], "widgets_values": ["ComfyUI"]},
    ]
    if clip_layer:
        prompt["10"] = {"class_type": "CLIPSetLastLayer", "inputs": {"stop_at_clip_layer": clip_layer, "clip": ["4", 1]}}
        nodes.append({"id": 10, "type": "CLIPSetLastLayer", "inputs": [{"name": "clip", "link": 10}],
                      "widgets_values": [clip_layer]})
    workflow = {"last_node_id": 10, "last_link_id": 10, "nodes": nodes, "links": links, "version": 0.4}
    return {"prompt": json.dumps(prompt), "workflow": json.dumps(workflow)}


def test_a_comfyui_png_becomes_the_request_its_ksampler_ran() -> None:
    data = png_with(comfy_graph(clip_layer=-2))
    meta = read_png_metadata(data)
    assert meta.source == "comfyui" and meta.workbench is None and meta.parameters is None
    imported = meta.imported()
    r = imported.request
    assert (r.seed, r.steps, r.guidance, r.scheduler, r.width, r.height) == (156680208700286, 20, 8.0,
                                                                             "dpm++_2m_karras", 512, 512)
    assert r.prompt.startswith("beautiful scenery") and r.negative_prompt == "text, watermark"
    assert r.model == "v1-5-pruned-emaonly.safetensors" and r.backend == "diffusers"
    assert r.options == {"clip_skip": 1}  # CLIPSetLastLayer -2 = A1111 "Clip skip: 2" = diffusers clip_skip 1
    assert meta.request(model="embedded:tiny-sd").model == "embedded:tiny-sd"
    # sd-parsers reads the same file as a ComfyUI one, with the same values
    info = theirs(data)
    assert info.generator.name == "COMFYUI"
    (sampler,) = info.samplers
    assert sampler.name == "dpmpp_2m" and sampler.parameters["scheduler"] == "karras"
    assert (sampler.parameters["seed"], sampler.parameters["steps"], sampler.parameters["cfg_scale"]) == (
        r.seed, r.steps, r.guidance)
    assert sampler.prompts[0].value == r.prompt and sampler.negative_prompts[0].value == r.negative_prompt
    assert sampler.model.name == r.model


def test_a_comfyui_workflow_alone_is_read_from_its_widgets() -> None:
    texts = comfy_graph(sampler="euler_ancestral", scheduler="normal", seed=42, steps=12, cfg=5.5)
    from_prompt = read_comfyui(texts).request
    from_workflow = read_comfyui({"workflow": texts["workflow"]}).request
    assert from_workflow == from_prompt and from_workflow.scheduler == "euler_a"  # Normal = Uniform's sigmas


def test_a_ksampler_advanced_reads_its_noise_seed_and_names_a_partial_run() -> None:
    graph = json.loads(comfy_graph()["prompt"])
    inputs = graph["3"]["inputs"]
    graph["3"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **{k: v for k, v in inputs.items() if k not in ("seed", "denoise")}, "noise_seed": 99, "add_noise": "enable",
        "start_at_step": 0, "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    full = read_comfyui({"prompt": json.dumps(graph)})
    assert full.request.seed == 99 and full.not_reproduced == {}
    graph["3"]["inputs"].update(end_at_step=12, add_noise="disable")
    partial = read_comfyui({"prompt": json.dumps(graph)})
    assert partial.not_reproduced == {"add_noise": "disable", "end_at_step": "12"}


@pytest.mark.parametrize(("changes", "message"), [
    ({"sampler": "uni_pc"}, "ComfyUI sampler 'uni_pc' (node 3) has no equivalent here"),
    ({"sampler": "dpmpp_3m_sde"}, "'DPM++ 3M SDE' has no equivalent here"),
    ({"scheduler": "linear_quadratic"}, "ComfyUI scheduler 'linear_quadratic' (node 3) has no equivalent here"),
    ({"scheduler": "kl_optimal"}, "'KL Optimal' .*no diffusers equivalent"),
    ({"sampler": "euler_ancestral", "scheduler": "karras"}, "takes no use_karras_sigmas"),
])
def test_comfyui_values_without_an_equivalent_are_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(MetadataError, match=message if ".*" in message else re.escape(message)):
        read_comfyui(comfy_graph(**changes))


def test_what_a_comfyui_graph_adds_beyond_the_request_is_named() -> None:
    texts = comfy_graph()
    graph = json.loads(texts["prompt"])
    graph["11"] = {"class_type": "LoraLoader", "inputs": {"lora_name": "detail.safetensors", "strength_model": 0.6,
                                                         "strength_clip": 0.6, "model": ["4", 0], "clip": ["4", 1]}}
    graph["3"]["inputs"]["model"] = ["11", 0]
    graph["3"]["inputs"]["denoise"] = 0.8
    imported = read_comfyui({"prompt": json.dumps(graph)})
    assert imported.request.model == "v1-5-pruned-emaonly.safetensors"
    assert "detail.safetensors" in imported.not_reproduced["node 11 (LoraLoader)"]
    assert imported.not_reproduced["denoise"] == "0.8"
    graph["3"]["inputs"]["latent_image"] = ["12", 0]  # an image-to-image graph
    graph["12"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["13", 0], "vae": ["4", 2]}}
    with pytest.raises(MetadataError, match="0 sampler nodes that start from an empty latent"):
        read_comfyui({"prompt": json.dumps(graph)})
    graph["3"]["inputs"]["latent_image"] = ["5", 0]
    graph["6"]["inputs"]["text"] = ["14", 0]  # a prompt from a node whose value the file does not keep
    graph["14"] = {"class_type": "StringConcatenate", "inputs": {"string_a": ["15", 0], "string_b": "x"}}
    with pytest.raises(MetadataError, match=r"node 6 \(CLIPTextEncode\) takes its 'text' from node 14 "
                                            r"\(StringConcatenate\)"):
        read_comfyui({"prompt": json.dumps(graph)})


# -- InvokeAI: the core_metadata node's fields, as JSON in "invokeai_metadata" ----------------------------

def invoke_metadata(**changes: Any) -> str:
    data = {"generation_mode": "txt2img", "positive_prompt": "a lighthouse at dusk", "negative_prompt": "blurry",
            "width": 64, "height": 64, "seed": 11, "rand_device": "cpu", "cfg_scale": 6.0,
            "cfg_rescale_multiplier": 0.0, "steps": 4, "scheduler": "euler_k", "clip_skip": 1,
            "model": {"key": "2c2f6f1f", "hash": "blake3:9f3a", "name": "stable-diffusion-v1-5", "base": "sd-1",
                      "type": "main"},
            "loras": [{"model": {"key": "a1", "hash": "blake3:a1", "name": "detail", "base": "sd-1", "type": "lora"},
                       "weight": 0.6}],
            "app_version": "5.6.0"}
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not None})


def test_an_invokeai_png_becomes_its_request() -> None:
    data = png_with({"invokeai_metadata": invoke_metadata()})
    meta = read_png_metadata(data)
    assert meta.source == "invokeai"
    imported = meta.imported()
    r = imported.request
    assert (r.prompt, r.negative_prompt, r.seed, r.steps, r.guidance, r.width, r.height) == (
        "a lighthouse at dusk", "blurry", 11, 4, 6.0, 64, 64)
    assert r.scheduler == "euler_karras" and r.options == {"clip_skip": 1} and r.model == "stable-diffusion-v1-5"
    assert "detail" in imported.not_reproduced["loras"]
    info = theirs(data)
    assert info.generator.name == "INVOKEAI"
    (sampler,) = info.samplers
    assert sampler.name == "euler_k" and sampler.prompts[0].value == r.prompt
    assert (sampler.parameters["seed"], sampler.parameters["steps"], sampler.parameters["cfg_scale"]) == (11, 4, 6.0)


@pytest.mark.parametrize(("changes", "message"), [
    ({"generation_mode": "img2img"}, "made by 'img2img', not text-to-image"),
    ({"scheduler": "dpmpp_3m_k"}, r"'dpmpp_3m_k' \(DPMSolverMultistepScheduler with solver_order=3"),
    ({"scheduler": "tcd"}, "'tcd' .*has no equivalent here"),
    ({"seed": None}, "has no 'seed'"),
    ({"model": None}, "names no model"),
])
def test_invokeai_metadata_that_cannot_be_mapped_says_why(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(MetadataError, match=message):
        read_invokeai(invoke_metadata(**changes))


# -- A1111 text, both directions with sd-parsers -----------------------------------------------------------

A1111_TEXTS = [
    ("masterpiece, (a lighthouse:1.2) on a cliff\nNegative prompt: lowres, watermark\nSteps: 28, Sampler: DPM++ 2M, "
     "Schedule type: Karras, CFG scale: 6.5, Seed: 3837491625, Size: 512x768, Model hash: 6ce0161689, Model: "
     "v1-5-pruned-emaonly, Version: v1.10.1", "dpm++_2m_karras"),
    ("a fox\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b, "
     "Model: sd15, Version: v1.6.0", "euler_a"),
    ("a fox\nNegative prompt: blurry\nSteps: 30, Sampler: DPM++ SDE Karras, CFG scale: 5, Seed: 7, Size: 768x512, "
     "Model: sd15, Version: v1.5.1", "dpm++_sde_karras"),
    ("a fox\nSteps: 25, Sampler: DPM++ 2M SDE, Schedule type: Exponential, CFG scale: 4.5, Seed: 1, Size: 1024x1024, "
     "Model: sdxl, Version: f2.0.1v1.10.1-previous-313-g2b2a7b3a", "dpm++_2m_sde_exponential"),
]


@pytest.mark.parametrize(("text", "scheduler"), A1111_TEXTS)
def test_a1111_texts_mean_the_same_to_sd_parsers_and_to_us(text: str, scheduler: str) -> None:
    data = png_with({"parameters": text})
    ours = read_png_metadata(data).imported()
    assert ours.source == "a1111" and ours.request.scheduler == scheduler
    info = theirs(data)
    assert info.generator.name == "AUTOMATIC1111"
    (sampler,) = info.samplers
    pairs = parse_a1111_parameters(text)
    assert sampler.name == pairs["Sampler"] and sampler.parameters.get("scheduler") == pairs.get("Schedule type")
    r = ours.request
    assert sampler.prompts[0].value == r.prompt
    assert [p.value for p in sampler.negative_prompts] == ([r.negative_prompt] if r.negative_prompt else [])
    assert (int(sampler.parameters["seed"]), int(sampler.parameters["steps"]), float(sampler.parameters["cfg_scale"])
            ) == (r.seed, r.steps, r.guidance)
    assert sampler.model.name == r.model


@pytest.mark.parametrize("scheduler", ["dpm++_2m_karras", "dpm++_2m", "euler", "dpm++_2m_sde_exponential", "ddim"])
def test_our_pngs_mean_the_same_to_sd_parsers(scheduler: str) -> None:
    request = GenerationRequest(backend="diffusers", model="sd15-pruned", prompt="a red lighthouse, at dusk",
                                negative_prompt="blurry, lowres", seed=4242, width=64, height=96, steps=9,
                                guidance=6.5, scheduler=scheduler, options={"clip_skip": 1})
    result = GeneratedImage(request=request, image=fake_image(request))
    data = encode_png(result.image, parameters=a1111_parameters(request),
                      workbench=workbench_metadata(result, run_id=None, tracking_uri=None))
    info = theirs(data)
    assert info.generator.name == "AUTOMATIC1111"
    (sampler,) = info.samplers
    pairs = parse_a1111_parameters(a1111_parameters(request))
    assert sampler.name == pairs["Sampler"] and sampler.parameters.get("scheduler") == pairs.get("Schedule type")
    assert sampler.prompts[0].value == request.prompt and sampler.negative_prompts[0].value == request.negative_prompt
    assert (sampler.parameters["seed"], sampler.parameters["steps"], sampler.parameters["cfg_scale"]) == (
        "4242", "9", "6.5")
    assert sampler.model.name == "sd15-pruned" and info.metadata["Clip skip"] == "2"
    # and what sd-parsers reads, written back as an A1111 text, is our request again
    rebuilt = (f"{sampler.prompts[0].value}\nNegative prompt: {sampler.negative_prompts[0].value}\nSteps: "
               f"{sampler.parameters['steps']}, Sampler: {sampler.name}"
               + (f", Schedule type: {sampler.parameters['scheduler']}" if "scheduler" in sampler.parameters else "")
               + f", CFG scale: {sampler.parameters['cfg_scale']}, Seed: {sampler.parameters['seed']}, Size: "
                 f"{info.metadata['Size']}, Model: {sampler.model.name}, Clip skip: {info.metadata['Clip skip']}")
    again = import_a1111(parse_a1111_parameters(rebuilt), backend="diffusers").request
    assert again.image_fields() == request.image_fields()


# -- inspect and reproduce on other tools' files -----------------------------------------------------------

def test_inspect_and_reproduce_a_comfyui_png(tracking_uri: str, embedded_model: Path, tmp_path: Path) -> None:
    texts = comfy_graph(ckpt="embedded:tiny-sd", width=64, height=64, steps=4, cfg=6.0, sampler="euler",
                        scheduler="normal", seed=5, positive="a lighthouse", negative="blurry")
    request = read_comfyui(texts).request
    (made,) = registry.get_backend("diffusers").generate([request])  # the image our backend makes for it
    path = tmp_path / "ComfyUI_00001_.png"
    path.write_bytes(png_with(texts, image=made.image))
    shown = invoke("inspect", path)
    assert shown.exit_code == 0, shown.output
    for text in ("no workbench metadata; ComfyUI graph", "the request we would run", "a lighthouse", "euler",
                 request.run_key, "reproduce it with"):
        assert text in shown.output, text
    as_json = json.loads(invoke("inspect", path, "--json").output)
    assert as_json["source"] == "comfyui" and as_json["request"]["seed"] == 5 and as_json["problem"] is None
    report = reproduce(path, tracking_uri=tracking_uri, log=False)
    assert report.source_kind == "comfyui" and report.bit_exact
    assert "(ComfyUI graph)" in report.to_text() and "ComfyUI graph only" in report.to_text()


def test_other_tools_files_that_cannot_be_mapped_exit_2(tmp_path: Path) -> None:
    unmapped = tmp_path / "unipc.png"
    unmapped.write_bytes(png_with(comfy_graph(sampler="uni_pc")))
    shown = invoke("inspect", unmapped)
    assert shown.exit_code == 0 and "cannot build a request" in shown.output and "uni_pc" in shown.output
    refused = invoke("reproduce", unmapped, "--no-log")
    assert refused.exit_code == 2 and "has only ComfyUI graph" in refused.output and "uni_pc" in refused.output
    img2img = tmp_path / "invoke.png"
    img2img.write_bytes(png_with({"invokeai_metadata": invoke_metadata(generation_mode="img2img")}))
    refused = invoke("reproduce", img2img, "--no-log")
    assert refused.exit_code == 2 and "not text-to-image" in refused.output
    nothing = tmp_path / "nothing.png"
    nothing.write_bytes(png_with({"Software": "an editor"}))
    result = invoke("inspect", nothing)
    assert result.exit_code == 2 and "holds no generation metadata" in result.output and "ComfyUI" in result.output
