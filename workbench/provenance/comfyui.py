"""ComfyUI's PNG metadata: the ``prompt`` graph (and the editor's ``workflow``) turned into a request.

ComfyUI's ``SaveImage`` writes two text chunks: ``prompt``, the graph it ran in the API format
(``{node id: {"class_type": ..., "inputs": {name: value or [source node id, output index]}}}``), and
``workflow``, the editor's document (``nodes`` with ``widgets_values``, ``links`` as ``[id, from node, from
slot, to node, to slot, type]``). ``read_comfyui`` reads the sampler node (``KSampler``:
``seed, steps, cfg, sampler_name, scheduler, denoise`` and the ``positive`` / ``negative`` / ``latent_image``
/ ``model`` links; ``KSamplerAdvanced``: ``noise_seed``), the text of the ``CLIPTextEncode`` nodes its
conditioning comes from, the size of its ``EmptyLatentImage``, the checkpoint of its
``CheckpointLoaderSimple`` and a ``CLIPSetLastLayer`` clip skip. Anything else on the way (LoRAs,
ControlNets, a second pass) is named in ``not_reproduced``; what cannot be read at all raises
``MetadataError`` naming the node. The ``workflow`` is read only when there is no ``prompt``.

ComfyUI's samplers are k-diffusion's, A1111's too: ``dpmpp_2m`` + ``karras`` is A1111's ``DPM++ 2M`` with
``Karras`` (``schedulers.scheduler_from_a1111``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import MetadataError
from ..types import GenerationRequest
from .imported import Imported
from .schedulers import A1111Unmapped, scheduler_from_a1111

__all__ = ["read_comfyui", "COMFY_SAMPLERS", "COMFY_SCHEDULES", "is_comfyui"]

# ComfyUI sampler_name -> A1111's name for the same k-diffusion sampler (comfy/samplers.py KSAMPLER_NAMES).
COMFY_SAMPLERS = {
    "euler": "Euler", "euler_ancestral": "Euler a", "heun": "Heun", "dpm_2": "DPM2", "dpm_2_ancestral": "DPM2 a",
    "lms": "LMS", "dpmpp_2s_ancestral": "DPM++ 2S a", "dpmpp_sde": "DPM++ SDE", "dpmpp_sde_gpu": "DPM++ SDE",
    "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_sde": "DPM++ 2M SDE", "dpmpp_2m_sde_gpu": "DPM++ 2M SDE",
    "dpmpp_2m_sde_heun": "DPM++ 2M SDE Heun", "dpmpp_2m_sde_heun_gpu": "DPM++ 2M SDE Heun",
    "dpmpp_3m_sde": "DPM++ 3M SDE", "dpmpp_3m_sde_gpu": "DPM++ 3M SDE", "dpm_fast": "DPM fast",
    "dpm_adaptive": "DPM adaptive",
}
# ComfyUI scheduler -> A1111's schedule type (comfy/samplers.py SCHEDULER_NAMES; ddim_uniform is A1111's "DDIM").
COMFY_SCHEDULES = {"normal": "Normal", "karras": "Karras", "exponential": "Exponential",
                   "sgm_uniform": "SGM Uniform", "simple": "Simple", "ddim_uniform": "DDIM", "beta": "Beta",
                   "kl_optimal": "KL Optimal"}
_SAMPLER_NODES = {"KSampler": "seed", "KSamplerAdvanced": "noise_seed"}
_ENCODERS = ("CLIPTextEncode", "CLIPTextEncodeSDXL")
_LATENTS = ("EmptyLatentImage", "EmptySD3LatentImage")
_CHECKPOINTS = {"CheckpointLoaderSimple": "ckpt_name", "CheckpointLoader": "ckpt_name", "UNETLoader": "unet_name"}
# The editor's widget order, for a file that has a workflow and no prompt.
_WIDGETS = {
    "KSampler": ["seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"],
    "KSamplerAdvanced": ["add_noise", "noise_seed", "control_after_generate", "steps", "cfg", "sampler_name",
                         "scheduler", "start_at_step", "end_at_step", "return_with_leftover_noise"],
    "CLIPTextEncode": ["text"], "EmptyLatentImage": ["width", "height", "batch_size"],
    "CheckpointLoaderSimple": ["ckpt_name"], "CLIPSetLastLayer": ["stop_at_clip_layer"],
    "LoraLoader": ["lora_name", "strength_model", "strength_clip"],
}
Graph = dict[str, dict[str, Any]]


def is_comfyui(texts: Mapping[str, str]) -> bool:
    return "prompt" in texts or "workflow" in texts


def _json(texts: Mapping[str, str], key: str) -> Any:
    try:
        return json.loads(texts[key])
    except (KeyError, ValueError):
        return None


def _from_workflow(workflow: Mapping[str, Any]) -> Graph:
    """The editor's document as an API-format graph (known widgets by name, links as [node, slot])."""
    sources = {link[0]: [str(link[1]), link[2]] for link in workflow.get("links") or []
               if isinstance(link, list) and len(link) >= 5}
    graph: Graph = {}
    for node in workflow.get("nodes") or []:
        if not isinstance(node, dict) or "id" not in node:
            continue
        kind = str(node.get("type", ""))
        values = node.get("widgets_values") or []
        inputs: dict[str, Any] = dict(zip(_WIDGETS.get(kind, []), values if isinstance(values, list) else []))
        for slot in node.get("inputs") or []:
            if isinstance(slot, dict) and slot.get("link") in sources and "widget" not in slot:
                inputs[str(slot.get("name"))] = sources[slot["link"]]
        graph[str(node["id"])] = {"class_type": kind, "inputs": inputs}
    return graph


class _Reader:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.not_reproduced: dict[str, str] = {}
        self.notes: list[str] = []

    def node(self, link: Any, what: str) -> tuple[str, dict[str, Any]]:
        if not (isinstance(link, list) and link and str(link[0]) in self.graph):
            raise MetadataError(f"the ComfyUI graph's {what} is not connected to a node it holds (got {link!r})")
        node_id = str(link[0])
        return node_id, self.graph[node_id]

    def skip(self, node_id: str, node: Mapping[str, Any]) -> None:
        inputs = {k: v for k, v in dict(node.get("inputs") or {}).items() if not isinstance(v, list)}
        self.not_reproduced[f"node {node_id} ({node.get('class_type')})"] = json.dumps(inputs, ensure_ascii=False)

    def literal(self, node_id: str, node: Mapping[str, Any], name: str) -> Any:
        value = dict(node.get("inputs") or {}).get(name)
        if isinstance(value, list):
            source, upstream = self.node(value, f"'{name}' of node {node_id}")
            raise MetadataError(f"the ComfyUI node {node_id} ({node.get('class_type')}) takes its '{name}' from node "
                                f"{source} ({upstream.get('class_type')}), whose value the file does not record")
        if value is None:
            raise MetadataError(f"the ComfyUI node {node_id} ({node.get('class_type')}) has no '{name}' value")
        return value

    def text(self, link: Any, what: str) -> str:
        """The prompt text a conditioning input comes from, passing through nodes that only add to it."""
        for _ in range(32):
            node_id, node = self.node(link, f"{what} conditioning")
            kind, inputs = node.get("class_type"), dict(node.get("inputs") or {})
            if kind in _ENCODERS:
                if kind == "CLIPTextEncodeSDXL":
                    if inputs.get("text_g") != inputs.get("text_l"):
                        self.not_reproduced[f"{what} text_l (node {node_id})"] = str(inputs.get("text_l"))
                    return str(self.literal(node_id, node, "text_g"))
                return str(self.literal(node_id, node, "text"))
            follow = next((inputs[k] for k in (what, "conditioning", "conditioning_to") if isinstance(inputs.get(k),
                                                                                                    list)), None)
            if follow is None:
                raise MetadataError(f"the {what} prompt comes from ComfyUI node {node_id} ({kind}), not from a text "
                                    f"encoder ({', '.join(_ENCODERS)}): its text cannot be read")
            self.skip(node_id, node)
            link = follow
        raise MetadataError(f"the {what} conditioning of the ComfyUI graph runs through more than 32 nodes")

    def model(self, link: Any) -> str:
        for _ in range(32):
            node_id, node = self.node(link, "model")
            kind = str(node.get("class_type"))
            if kind in _CHECKPOINTS:
                return str(self.literal(node_id, node, _CHECKPOINTS[kind]))
            inputs = dict(node.get("inputs") or {})
            if not isinstance(inputs.get("model"), list):
                raise MetadataError(f"the ComfyUI model comes from node {node_id} ({kind}), not from a checkpoint "
                                    f"loader ({', '.join(_CHECKPOINTS)})")
            self.skip(node_id, node)
            link = inputs["model"]
        raise MetadataError("the model of the ComfyUI graph runs through more than 32 nodes")

    def clip_skip(self, encoder_link: Any) -> int | None:
        """ComfyUI's CLIPSetLastLayer -N (A1111's "Clip skip: N") on the positive encoder's clip: N - 1."""
        link = dict(self.node(encoder_link, "positive conditioning")[1].get("inputs") or {}).get("clip")
        for _ in range(32):
            if not (isinstance(link, list) and str(link[0]) in self.graph):
                return None
            node = self.graph[str(link[0])]
            inputs = dict(node.get("inputs") or {})
            if node.get("class_type") == "CLIPSetLastLayer":
                layer = inputs.get("stop_at_clip_layer")
                return -int(layer) - 1 if isinstance(layer, int) and layer <= -2 else None
            link = inputs.get("clip")
        return None


def _sampler_node(graph: Graph) -> tuple[str, dict[str, Any]]:
    samplers = {k: v for k, v in graph.items() if v.get("class_type") in _SAMPLER_NODES}
    if not samplers:
        kinds = sorted({str(v.get("class_type")) for v in graph.values()})
        raise MetadataError(f"the ComfyUI graph has no KSampler or KSamplerAdvanced node (its nodes: "
                            f"{', '.join(kinds[:20])}); it cannot be turned into a request")
    first = {k: v for k, v in samplers.items() if _latent_source(graph, v) in _LATENTS}
    if len(first) != 1:
        raise MetadataError(f"the ComfyUI graph has {len(first)} sampler nodes that start from an empty latent "
                            f"(of {len(samplers)}: nodes {', '.join(sorted(samplers))}); only a graph with one can "
                            f"be turned into a request")
    return next(iter(first.items()))


def _latent_source(graph: Graph, node: Mapping[str, Any]) -> str | None:
    link = dict(node.get("inputs") or {}).get("latent_image")
    return graph.get(str(link[0]), {}).get("class_type") if isinstance(link, list) and link else None


def read_comfyui(texts: Mapping[str, str], *, backend: str | None = None, model: str | None = None) -> Imported:
    """The request a ComfyUI PNG's ``prompt`` (else ``workflow``) graph describes, as far as it maps onto one."""
    graph = _json(texts, "prompt")
    if not isinstance(graph, dict):
        workflow = _json(texts, "workflow")
        if not isinstance(workflow, dict):
            raise MetadataError("the ComfyUI 'prompt' and 'workflow' chunks are not JSON objects")
        graph = _from_workflow(workflow)
    graph = {str(k): v for k, v in graph.items() if isinstance(v, dict)}
    reader = _Reader(graph)
    node_id, node = _sampler_node(graph)
    for other, extra in graph.items():
        if other != node_id and extra.get("class_type") in _SAMPLER_NODES:
            reader.skip(other, extra)
    inputs = dict(node.get("inputs") or {})
    kind = str(node.get("class_type"))
    sampler_name = str(reader.literal(node_id, node, "sampler_name"))
    schedule_name = str(reader.literal(node_id, node, "scheduler"))
    if sampler_name not in COMFY_SAMPLERS:
        raise MetadataError(f"the ComfyUI sampler '{sampler_name}' (node {node_id}) has no equivalent here; mapped "
                            f"samplers: {', '.join(COMFY_SAMPLERS)}")
    if schedule_name not in COMFY_SCHEDULES:
        raise MetadataError(f"the ComfyUI scheduler '{schedule_name}' (node {node_id}) has no equivalent here; "
                            f"mapped schedulers: {', '.join(COMFY_SCHEDULES)}")
    try:
        scheduler = scheduler_from_a1111(COMFY_SAMPLERS[sampler_name], COMFY_SCHEDULES[schedule_name])
    except A1111Unmapped as exc:
        raise MetadataError(f"ComfyUI {sampler_name} + {schedule_name} (node {node_id}): {exc}") from None
    latent_id, latent = reader.node(inputs.get("latent_image"), "latent image")
    batch = dict(latent.get("inputs") or {}).get("batch_size", 1)
    if isinstance(batch, int) and batch > 1:
        reader.notes.append(f"made in a batch of {batch} (node {latent_id}); which image of it this file is, is not "
                            f"recorded")
    denoise = inputs.get("denoise", 1.0)
    if kind == "KSampler" and denoise not in (1, 1.0):
        reader.not_reproduced["denoise"] = str(denoise)
    steps = inputs.get("steps")
    for key, default in (("start_at_step", 0), ("add_noise", "enable"), ("return_with_leftover_noise", "disable")):
        if key in inputs and inputs[key] != default:
            reader.not_reproduced[key] = str(inputs[key])
    end = inputs.get("end_at_step")
    if isinstance(end, int) and isinstance(steps, int) and end < steps:
        reader.not_reproduced["end_at_step"] = str(end)
    options: dict[str, Any] = {}
    skip = reader.clip_skip(inputs.get("positive"))
    backend = backend or "diffusers"
    if skip and backend == "diffusers":
        options["clip_skip"] = skip
    checkpoint = reader.model(inputs.get("model"))
    try:
        request = GenerationRequest(
            backend=backend, model=model or checkpoint, prompt=reader.text(inputs.get("positive"), "positive"),
            negative_prompt=reader.text(inputs.get("negative"), "negative"),
            seed=int(reader.literal(node_id, node, _SAMPLER_NODES[kind])),
            width=int(reader.literal(latent_id, latent, "width")),
            height=int(reader.literal(latent_id, latent, "height")),
            steps=int(reader.literal(node_id, node, "steps")), guidance=float(reader.literal(node_id, node, "cfg")),
            scheduler=scheduler, options=options)
    except (TypeError, ValueError) as exc:
        raise MetadataError(f"the ComfyUI graph's values do not make a request: {exc}") from None
    if model and model != checkpoint:
        reader.notes.append(f"model: the graph loads '{checkpoint}'; regenerated with '{model}'")
    return Imported("comfyui", request, reader.not_reproduced, tuple(reader.notes))
