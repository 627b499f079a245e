"""Reproducing a past image from its run id or its PNG, and proving it.

- ``origin``: run id / PNG / A1111 text → the request, image, environment and batch it was made in
- ``report``: ``ReproductionReport`` and the pixel comparison
- ``regenerate``: ``reproduce()``, which regenerates, compares and logs the reproduction
"""
