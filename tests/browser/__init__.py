"""Helpers for the notebook and browser tests: a quick-start store shared by the session, a JupyterLab
server on loopback, and where to find Debian's Chromium."""
