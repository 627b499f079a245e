"""Tracking: the only package that talks to MLflow (through ``MlflowClient`` and explicit run ids).

- ``store``: ``Tracker``, one tracking store: experiments, runs written and read back, artifacts
- ``schema``: every tag, metric and artifact name, the params of a request, ``RunRecord``
- ``artifacts``: the artifact folder of an image run (the PNG with its metadata, the request, prompts)
- ``logger``: ``BackgroundLogger``, image runs written off the generating thread
- ``spool``: finished images the store could not take, kept locally and uploaded later
"""
