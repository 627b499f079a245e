"""Provenance: what travels with an image so it can be made again.

- ``png``: the ``workbench`` and ``parameters`` text chunks of a PNG, written and read back (verified)
- ``a1111``: the AUTOMATIC1111 ``parameters`` text: written (A1111 >= 1.9's form), parsed, turned back into a request
- ``comfyui``, ``invokeai``: other tools' PNG metadata (a ComfyUI graph, InvokeAI's metadata) read into a request
- ``imported``: ``Imported``, what another tool's metadata turns into (request, what it does not reproduce, notes)
- ``environment``: the environment fingerprint of a run, and what differs between two
- ``schedulers``: scheduler names, the diffusers classes behind them and A1111's samplers and schedule types
"""
