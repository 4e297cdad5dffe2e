"""The library every app of kvmweb uses, and that imports none of them.

Formatting, publishing to the browsers, records carried out over time, links,
private files, the roles, WebSocket and HTTP plumbing, API authentication,
throttles, tokens and login limits. ``kvmweb/`` on top is the project's wiring
(settings, URLs, ASGI, the worker); the layers are in docs/ARCHITECTURE.md and
pyproject.toml ([tool.importlinter]) enforces them.
"""
