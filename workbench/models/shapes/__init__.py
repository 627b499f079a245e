"""The shapes visual language: a procedural dataset, an adherence scorer and a demo-model trainer.

- ``workbench.models.shapes.dataset``: drawn 64×64 shapes, their caption grammar, ``parse_prompt``, ``HELD_OUT``.
- ``workbench.models.shapes.scorer``: pixel-check adherence scores (colour, shape, size, position, background).
- ``workbench.models.shapes.recipe``: the training configurations and how each part of the pipeline is built.
- ``workbench.models.shapes.train``: ``python -m workbench.models.shapes.train --out DIR`` trains it (checkpointed,
  ``--resume``); ``card`` scores the saved pipeline and writes its model card.

Importing this package needs numpy and PIL only; ``train`` imports torch and diffusers.
"""

from .dataset import HELD_OUT, caption, held_out_attrs, parse_prompt, sample
from .scorer import analyse, score, score_many

__all__ = ["HELD_OUT", "analyse", "caption", "held_out_attrs", "parse_prompt", "sample", "score", "score_many"]
