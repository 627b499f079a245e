"""Experiments: the spec (schema and every check) and its expansion into requests.

- ``spec``: ``ExperimentSpec`` (pydantic, extra="forbid"), ``parse_spec``, ``load_spec``, the checks
- ``expand``: cells and ``expand`` (pure: spec + templates → ``GenerationRequest``s)
"""
