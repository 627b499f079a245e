"""Models the project builds or ships itself, and the identity of a model's weights.

- ``embedded``: the ``embedded:NAME`` registry (the random-weight ``tiny-sd``, the trained ``shapes``).
- ``tokenizer``: our own CLIP tokenizer files (no download).
- ``weights``: a content hash of a pipeline folder, cached by file stats.
- ``shapes``: the shapes visual language (dataset, scorer) and the trainer of the shapes demo model.
"""
