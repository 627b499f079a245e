"""Tests of the backends (diffusers, OpenAI, Replicate); API backends run against tests/standins."""
