"""How kvmweb writes figures for people: one place, for pages, messages and
live payloads alike, exposed to every template as filters (``{{ n|size }}``).

Sizes are binary and say so: KiB, MiB, GiB (libvirt counts in KiB and MiB,
and so do the forms). The JavaScript formats nothing: live payloads carry the
text made here.
"""

from __future__ import annotations

import json
from typing import Any

from django import template

register = template.Library()

DASH = "—"
_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


# An audit entry's outcome in words: pre-flight checks record pass/warn/fail,
# migrations and evacuations succeeded/failed/cancelled.
OUTCOME_LABELS = {
    "pass": "Checks passed",
    "warn": "Checks warned",
    "fail": "Checks failed",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "cancelled": "Cancelled",
}


@register.filter
def outcome_label(value: str) -> str:
    if not value:
        return DASH
    return OUTCOME_LABELS.get(value, value.replace("_", " ").capitalize())


@register.filter
def size(n: float | None) -> str:
    """A number of bytes: "512 B", "1.5 MiB", "16.0 GiB"."""
    if n is None:
        return DASH
    value = float(n)
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value < 1024:
        return f"{sign}{int(value)} B"
    for unit in _UNITS[:-1]:
        value /= 1024
        if value < 1024:
            return f"{sign}{value:.1f} {unit}"
    return f"{sign}{value / 1024:.1f} {_UNITS[-1]}"


@register.filter
def rate(bps: float | None) -> str:
    """Bytes per second: "8.0 MiB/s"."""
    return DASH if bps is None else f"{size(bps)}/s"


@register.filter
def duration(seconds: float | None) -> str:
    """Seconds, rounded: "12 s", "2 min 05 s", "1 h 03 min"."""
    if seconds is None:
        return DASH
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def kind_for(key: str) -> str:
    """How to show a figure, judged from its name (statistics have no fixed keys)."""
    if key.endswith("_bps"):
        return "rate"
    if key.endswith("_ms"):
        return "ms"
    if key.endswith(("_seconds", "elapsed", "duration")):
        return "seconds"
    if key.endswith(("_total", "_processed", "_remaining", "_bytes", "_transferred")):
        return "bytes"
    return "plain"


@register.filter
def figure(value: Any, kind: str = "plain") -> str:
    """A figure of a given kind: bytes, rate, ms, seconds, bool or plain."""
    if value is None or value == "":
        return DASH
    if kind == "bool":
        return "yes" if value else "no"
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return ", ".join(value) or DASH  # volumes removed, warnings
        if isinstance(value, dict | list):
            return json.dumps(value)
        return str(value)
    if kind == "bytes":
        return size(value)
    if kind == "rate":
        return rate(value)
    if kind == "ms":
        return f"{round(value)} ms"
    if kind == "seconds":
        return duration(value)
    if isinstance(value, float):
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return str(value)


def named_figure(key: str, value: Any) -> str:
    """A figure whose kind its name tells (see kind_for)."""
    return figure(value, kind_for(key))


def plural(n: int, noun: str) -> str:
    """A count and its noun: "1 host", "2 hosts"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def hosts_summary(hosts: int, vms: int, running: int) -> str:
    """The line above the dashboard's host table: "2 hosts · 5 virtual machines, 3 running"."""
    return f"{plural(hosts, 'host')} · {plural(vms, 'virtual machine')}, {running} running"


CHECK_COLOURS = {"pass": "green", "warn": "orange", "fail": "red"}


@register.filter
def check_colour(result: str) -> str:
    """The badge colour of a pre-flight check's result."""
    return CHECK_COLOURS.get(result, "grey")
