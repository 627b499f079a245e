"""Comparison grids over logged runs.

- ``pivot``: runs → a rows × columns table of cells, every other factor held fixed (pure)
- ``render``: the table drawn as a labelled PNG (PIL), and ``grid_from_records`` (pivot, load, draw)
"""
