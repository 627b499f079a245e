"""Which level wins: scores on every image, human ratings, and the per-factor effects report.

- ``image_stats``: brightness, contrast, colourfulness, sharpness, clipped pixels, a blank-image flag
- ``clip``: the CLIP score under a CLIP model the user names (hub id or local folder; loaded once)
- ``adherence``: the shapes model's pixel-check adherence, per attribute and overall
- ``scoring``: the Scorer contract, which scorers a sweep gets, and the logger's ``prepare`` hook
- ``rescore``: ``rescore()`` adds scores to an experiment's existing runs (``workbench score``)
- ``ratings``: human 1–5 ratings and best-of-row picks, per rater, as metrics (``workbench rate``)
- ``stats``: t intervals, paired and unpaired differences (no scipy)
- ``effects``: the report's numbers (per factor and level; grids: cells and main effects)
- ``table``: the report as rows of text (CLI and widget); ``chart``: the report as a PNG (matplotlib)
- ``report``: ``report()`` reads, computes, draws and logs to the latest parent run (``workbench report``)
"""
