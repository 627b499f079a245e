"""Provenance: what travels with an image so it can be made again.

- ``png``: the ``workbench`` and ``parameters`` text chunks of a PNG, written and read back (verified)
- ``a1111``: the AUTOMATIC1111 ``parameters`` text: written, parsed, turned back into a request
- ``environment``: the environment fingerprint of a run, and what differs between two
- ``schedulers``: scheduler names, the diffusers classes behind them and A1111's sampler names
"""
