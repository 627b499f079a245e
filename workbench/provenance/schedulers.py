"""Scheduler names: our short names, the diffusers classes behind them, and A1111's samplers and schedule types.

A scheduler name is a sampler, optionally with a sigma schedule: ``euler``, ``dpm++_2m_karras``,
``dpm++_2m_sde_exponential``. Pure data (no torch import), shared by the diffusers backend and the A1111
text, checked against three references nobody here wrote:

- diffusers' own A1111/k-diffusion table (``docs/source/en/api/schedulers/overview.md``: the samplers, and
  "Noise schedules and schedule types": Karras → ``use_karras_sigmas``, sgm_uniform / simple →
  ``timestep_spacing="trailing"``, exponential / beta → ``timestep_spacing="linspace"`` with
  ``use_exponential_sigmas`` / ``use_beta_sigmas``); a schedule is offered only where the class takes
  every config key it needs (``tests/test_metadata.py`` checks that against the installed diffusers);
- A1111 ≥ 1.9 ``modules/sd_samplers_kdiffusion.py``: each sampler's default schedule (its
  ``options['scheduler']``), which is what ``Schedule type: Automatic`` (or no ``Schedule type`` at all)
  means there;
- A1111 ``modules/sd_schedulers.py`` (labels, names, aliases) and ``modules/sd_samplers.py``
  (``get_sampler_and_scheduler``: an old ``"DPM++ 2M Karras"`` is the sampler ``DPM++ 2M`` with the
  schedule ``Karras``).

A sampler without a schedule suffix is diffusers' class as configured by the model, which diffusers'
table sets beside A1111's sampler with A1111's Uniform schedule. A1111's Normal schedule gives the same
sigmas as Uniform on discrete-time models (both take ``linspace(t_max, 0, n)``), so both read as no suffix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Sampler", "Schedule", "SchedulerEntry", "SAMPLERS", "SCHEDULES", "SCHEDULERS", "UNMAPPED_SAMPLERS",
           "UNMAPPED_SCHEDULES", "CLASS_CONFIG_KEYS", "scheduler_spec", "a1111_names", "a1111_sampler_name",
           "scheduler_from_a1111", "A1111Unmapped", "a1111_default_schedule"]


@dataclass(frozen=True)
class Sampler:
    """One sampler: our short name, its diffusers class and config, its A1111 name."""

    name: str
    cls: str
    overrides: dict[str, Any] = field(default_factory=dict)
    a1111: str | None = None
    # The schedule A1111 >= 1.9 uses for "Automatic" (options['scheduler'] in sd_samplers_kdiffusion.py);
    # None: the model's own discretisation (Uniform).
    a1111_default: str | None = None
    # k-diffusion samplers take a Schedule type in A1111; its timestep samplers (DDIM, PLMS, UniPC, LCM) do not.
    sigma_schedules: bool = True


@dataclass(frozen=True)
class Schedule:
    """One sigma schedule: our suffix, A1111's label and name, the diffusers config it takes."""

    key: str
    label: str
    overrides: dict[str, Any]


@dataclass(frozen=True)
class SchedulerEntry:
    cls: str
    overrides: dict[str, Any]
    sampler: Sampler
    schedule: Schedule | None


SAMPLERS: dict[str, Sampler] = {s.name: s for s in (
    Sampler("ddim", "DDIMScheduler", a1111="DDIM", sigma_schedules=False),
    Sampler("ddpm", "DDPMScheduler", a1111="DDPM", sigma_schedules=False),  # not an A1111 sampler: ours
    Sampler("pndm", "PNDMScheduler", a1111="PLMS", sigma_schedules=False),
    Sampler("lms", "LMSDiscreteScheduler", a1111="LMS"),
    Sampler("euler", "EulerDiscreteScheduler", a1111="Euler"),
    Sampler("euler_a", "EulerAncestralDiscreteScheduler", a1111="Euler a"),
    Sampler("heun", "HeunDiscreteScheduler", a1111="Heun"),
    Sampler("dpm2", "KDPM2DiscreteScheduler", a1111="DPM2", a1111_default="karras"),
    Sampler("dpm2_a", "KDPM2AncestralDiscreteScheduler", a1111="DPM2 a", a1111_default="karras"),
    Sampler("dpm++_2m", "DPMSolverMultistepScheduler", a1111="DPM++ 2M", a1111_default="karras"),
    Sampler("dpm++_2m_sde", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"},
            a1111="DPM++ 2M SDE", a1111_default="exponential"),
    Sampler("dpm++_sde", "DPMSolverSinglestepScheduler", a1111="DPM++ SDE", a1111_default="karras"),
    Sampler("unipc", "UniPCMultistepScheduler", a1111="UniPC", sigma_schedules=False),
    Sampler("lcm", "LCMScheduler", a1111="LCM", sigma_schedules=False),
)}

SCHEDULES: dict[str, Schedule] = {s.key: s for s in (
    Schedule("karras", "Karras", {"use_karras_sigmas": True}),
    Schedule("exponential", "Exponential", {"timestep_spacing": "linspace", "use_exponential_sigmas": True}),
    Schedule("beta", "Beta", {"timestep_spacing": "linspace", "use_beta_sigmas": True}),
    Schedule("sgm_uniform", "SGM Uniform", {"timestep_spacing": "trailing"}),
    Schedule("simple", "Simple", {"timestep_spacing": "trailing"}),
)}
# A1111 schedule types that are no suffix here (see the module docstring).
_UNIFORM = {"automatic": "Automatic", "uniform": "Uniform", "normal": "Normal"}
# A1111 samplers and schedule types diffusers' table has no class or config for.
UNMAPPED_SAMPLERS = ("DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "DPM fast", "DPM adaptive", "Restart",
                     "DDIM CFG++")
UNMAPPED_SCHEDULES = {"polyexponential": "Polyexponential", "kl_optimal": "KL Optimal",
                      "align_your_steps": "Align Your Steps", "ddim": "DDIM"}
_ALIASES = {"sgmuniform": "sgm_uniform"}  # sd_schedulers.py: Scheduler('sgm_uniform', ..., aliases=["SGMUniform"])

# The config keys each diffusers class takes that a schedule needs (diffusers 0.42; tested against the
# installed version): a schedule is offered only where all of its keys are there.
CLASS_CONFIG_KEYS: dict[str, frozenset[str]] = {
    "DDIMScheduler": frozenset({"timestep_spacing"}),
    "DDPMScheduler": frozenset({"timestep_spacing"}),
    "PNDMScheduler": frozenset({"timestep_spacing"}),
    "LCMScheduler": frozenset({"timestep_spacing"}),
    "EulerAncestralDiscreteScheduler": frozenset({"timestep_spacing"}),
    "DPMSolverSinglestepScheduler": frozenset({"use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"}),
    **{cls: frozenset({"use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "timestep_spacing"})
       for cls in ("LMSDiscreteScheduler", "EulerDiscreteScheduler", "HeunDiscreteScheduler",
                   "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "DPMSolverMultistepScheduler",
                   "UniPCMultistepScheduler")},
}


def _takes(sampler: Sampler, schedule: Schedule) -> bool:
    return sampler.sigma_schedules and set(schedule.overrides) <= CLASS_CONFIG_KEYS.get(sampler.cls, frozenset())


def _entries() -> dict[str, SchedulerEntry]:
    out: dict[str, SchedulerEntry] = {}
    for sampler in SAMPLERS.values():
        out[sampler.name] = SchedulerEntry(sampler.cls, dict(sampler.overrides), sampler, None)
        for schedule in SCHEDULES.values():
            if _takes(sampler, schedule):
                out[f"{sampler.name}_{schedule.key}"] = SchedulerEntry(
                    sampler.cls, {**sampler.overrides, **schedule.overrides}, sampler, schedule)
    return out


# name: the diffusers class, its config overrides, the sampler and schedule it stands for
SCHEDULERS: dict[str, SchedulerEntry] = _entries()


def scheduler_spec(name: str) -> tuple[str, dict[str, Any]]:
    """(diffusers class name, config overrides) for a short name or a diffusers class name."""
    if name in SCHEDULERS:
        entry = SCHEDULERS[name]
        return entry.cls, dict(entry.overrides)
    if name.endswith("Scheduler"):
        return name, {}
    raise KeyError(name)


def a1111_names(name: str | None) -> tuple[str | None, str | None]:
    """(``Sampler``, ``Schedule type``) as A1111 >= 1.9 writes them for our scheduler ``name``.

    The schedule type is written whenever it is not what A1111 would assume without it: always for a
    schedule, and ``Uniform`` for a plain sampler whose A1111 default is another (``DPM++ 2M``: Karras).

    >>> a1111_names("dpm++_2m_karras"), a1111_names("dpm++_2m"), a1111_names("euler")
    (('DPM++ 2M', 'Karras'), ('DPM++ 2M', 'Uniform'), ('Euler', None))
    """
    if name is None:
        return None, None
    entry = SCHEDULERS.get(name)
    if entry is None:  # a diffusers class name: written as it is, other tools skip it
        return name, None
    if entry.schedule is not None:
        return entry.sampler.a1111, entry.schedule.label
    if entry.sampler.sigma_schedules and entry.sampler.a1111_default is not None:
        return entry.sampler.a1111, "Uniform"
    return entry.sampler.a1111, None


def a1111_sampler_name(name: str | None) -> str | None:
    """A1111's ``Sampler`` value for our scheduler ``name`` (see ``a1111_names`` for the schedule)."""
    return a1111_names(name)[0]


class A1111Unmapped(LookupError):
    """An A1111 sampler or schedule with no scheduler here; the message names it and why."""


def _schedule_key(text: str) -> str | None:
    """Our key ("karras"), "uniform", an unmapped key, or None for a schedule A1111 does not have."""
    folded = text.strip().lower()
    folded = _ALIASES.get(folded.replace(" ", ""), folded)
    for key, schedule in SCHEDULES.items():
        if folded in (key, schedule.label.lower()):
            return key
    for key, label in {**_UNIFORM, **UNMAPPED_SCHEDULES}.items():
        if folded in (key, label.lower()):
            return "uniform" if key in _UNIFORM and key != "automatic" else key
    return None


def _all_schedule_words() -> list[tuple[str, str]]:
    # (word, key) in A1111's own order of sd_schedulers.schedulers: label, name, aliases.
    words = [(label, key) for key, label in _UNIFORM.items()]
    words += [w for s in SCHEDULES.values() for w in ((s.label, s.key), (s.key, s.key))]
    words += [w for key, label in UNMAPPED_SCHEDULES.items() for w in ((label, key), (key, key))]
    return words + [("SGMUniform", "sgm_uniform")]


def scheduler_from_a1111(sampler: str, schedule: str | None = None, *,
                         automatic: Literal["sampler-default", "uniform"] = "sampler-default") -> str:
    """Our scheduler name for an A1111 ``Sampler`` and ``Schedule type``; ``A1111Unmapped`` otherwise.

    As A1111's ``get_sampler_and_scheduler``: a schedule named at the end of the sampler (``"DPM++ 2M
    Karras"``, written before 1.9) wins over ``schedule``. No schedule, or ``Automatic``, means the sampler's
    default: its A1111 >= 1.9 default (``automatic="sampler-default"``), or Uniform, as before 1.9
    (``automatic="uniform"``). Timestep samplers (DDIM, PLMS, UniPC, LCM) take no schedule, in A1111 too.

    >>> scheduler_from_a1111("DPM++ 2M Karras"), scheduler_from_a1111("Euler", "Karras")
    ('dpm++_2m_karras', 'euler_karras')
    >>> scheduler_from_a1111("DPM++ 2M"), scheduler_from_a1111("DPM++ 2M", automatic="uniform")
    ('dpm++_2m_karras', 'dpm++_2m')
    """
    name = sampler.strip()
    key: str | None = None
    if schedule is not None and schedule.strip():
        key = _schedule_key(schedule)
        if key is None:
            raise A1111Unmapped(f"the A1111 schedule type '{schedule}' is not one A1111 has (known: "
                                f"{', '.join(_known_schedules())})")
    for word, word_key in _all_schedule_words():
        if name.lower().endswith(" " + word.lower()):
            name, key = name[:-len(word) - 1].strip(), ("uniform" if word_key in _UNIFORM and
                                                        word_key != "automatic" else word_key)
            break
    found = next((s for s in SAMPLERS.values() if s.a1111 and s.a1111.lower() == name.lower()), None)
    if found is None:
        if any(u.lower() == name.lower() for u in UNMAPPED_SAMPLERS):
            raise A1111Unmapped(f"the A1111 sampler '{name}' has no equivalent here; known samplers: "
                                f"{', '.join(_known_samplers())} (diffusers' scheduler table has no class for "
                                f"'{name}')")
        raise A1111Unmapped(f"the A1111 sampler '{sampler}' has no equivalent here; known samplers: "
                            f"{', '.join(_known_samplers())}")
    if not found.sigma_schedules:
        return found.name  # A1111 applies Schedule type to its k-diffusion samplers only
    if key in (None, "automatic"):
        key = found.a1111_default if automatic == "sampler-default" else None
    if key in (None, "uniform"):
        return found.name
    if key in UNMAPPED_SCHEDULES:
        raise A1111Unmapped(f"the A1111 schedule type '{UNMAPPED_SCHEDULES[key]}' (with sampler '{name}') has no "
                            f"diffusers equivalent; mapped schedule types: Uniform, Normal, "
                            f"{', '.join(s.label for s in SCHEDULES.values())}")
    chosen = SCHEDULES[key]
    if not _takes(found, chosen):
        raise A1111Unmapped(f"the A1111 sampler '{name}' with schedule type '{chosen.label}' has no diffusers "
                            f"equivalent: {found.cls} takes no {', '.join(sorted(chosen.overrides))}")
    return f"{found.name}_{chosen.key}"


def _known_samplers() -> list[str]:
    return [s.a1111 for s in SAMPLERS.values() if s.a1111]


def _known_schedules() -> list[str]:
    return ["Automatic", "Uniform", "Normal", *(s.label for s in SCHEDULES.values()), *UNMAPPED_SCHEDULES.values()]


def a1111_default_schedule(name: str) -> str | None:
    """The A1111 >= 1.9 label of the schedule ``Automatic`` means for our scheduler's sampler, or None."""
    entry = SCHEDULERS.get(name)
    if entry is None or not entry.sampler.sigma_schedules or entry.sampler.a1111_default is None:
        return None
    return SCHEDULES[entry.sampler.a1111_default].label
