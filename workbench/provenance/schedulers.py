"""Scheduler names: our short names, the diffusers classes behind them, and A1111's sampler names.

Pure data (no torch import), shared by the diffusers backend and the PNG metadata writer/parser.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SCHEDULERS", "scheduler_spec", "a1111_sampler_name", "scheduler_from_a1111"]

# name: (diffusers class, config overrides, A1111 sampler name)
SCHEDULERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "ddim": ("DDIMScheduler", {}, "DDIM"),
    "ddpm": ("DDPMScheduler", {}, "DDPM"),
    "pndm": ("PNDMScheduler", {}, "PLMS"),
    "lms": ("LMSDiscreteScheduler", {}, "LMS"),
    "euler": ("EulerDiscreteScheduler", {}, "Euler"),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "heun": ("HeunDiscreteScheduler", {}, "Heun"),
    "dpm++_2m": ("DPMSolverMultistepScheduler", {}, "DPM++ 2M"),
    "dpm++_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, "DPM++ 2M Karras"),
    "dpm++_sde": ("DPMSolverSinglestepScheduler", {}, "DPM++ SDE"),
    "unipc": ("UniPCMultistepScheduler", {}, "UniPC"),
    "lcm": ("LCMScheduler", {}, "LCM"),
}


def scheduler_spec(name: str) -> tuple[str, dict[str, Any]]:
    """(diffusers class name, config overrides) for a short name or a diffusers class name."""
    if name in SCHEDULERS:
        cls, overrides, _ = SCHEDULERS[name]
        return cls, dict(overrides)
    if name.endswith("Scheduler"):
        return name, {}
    raise KeyError(name)


def a1111_sampler_name(name: str | None) -> str | None:
    if name is None:
        return None
    return SCHEDULERS[name][2] if name in SCHEDULERS else name


def scheduler_from_a1111(sampler: str) -> str | None:
    """Our short name for an A1111 sampler name (``"Euler a"`` → ``"euler_a"``), or None."""
    for short, (_, _, a1111) in SCHEDULERS.items():
        if a1111.lower() == sampler.strip().lower():
            return short
    return None
