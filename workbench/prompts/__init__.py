"""Prompts: templates (sandboxed Jinja2), their front matter, and what a backend did to a prompt.

- ``templates``: ``TemplateLibrary``, ``load_template``, ``render_string`` (pure past loading files)
- ``front_matter``: the YAML header of a template file, parsed and checked
- ``diff``: the difference between a requested and a revised prompt (pure)
"""
