"""A migration as people read it: the figures, labels, colours and fragments
that its page, the dashboard and the live payloads show.

The page renders these on the server; ``Migration.as_event()`` carries the
same (``display``) to the browsers, so the JavaScript only puts text in place.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from django.template.loader import render_to_string

from kvmweb.formatting import duration, figure, named_figure, rate, size

from .wire import ChartDisplay, EventRow, FigureRow, LineDisplay, MigrationDisplay

if TYPE_CHECKING:
    from .models import Migration

# The progress figures the page shows, in order: (key, label, kind).
PROGRESS_FIELDS = [
    ("data_processed", "Moved", "bytes"),
    ("data_remaining", "Remaining", "bytes"),
    ("data_total", "Total", "bytes"),
    ("memory_remaining", "Memory remaining", "bytes"),
    ("disk_remaining", "Disk remaining", "bytes"),
    ("speed_bps", "Speed", "rate"),
    ("dirty_rate_bps", "Memory dirtied", "rate"),
    ("iteration", "Pass", "plain"),
    ("downtime_ms", "Allowed downtime", "ms"),
    ("eta_seconds", "Time left (estimate)", "seconds"),
    ("elapsed", "Elapsed", "seconds"),
    ("converging", "Converging", "bool"),
]

# What the final statistics are called.
STAT_LABELS = {
    "time_ms": "Total time",
    "downtime_ms": "Downtime (guest paused)",
    "data_transferred": "Data sent",
    "memory_transferred": "Memory sent",
    "disk_transferred": "Disk data sent",
    "disk_total": "Disk size",
    "iterations": "Passes over memory",
    "speed_bps": "Speed",
    "dirty_rate_bps": "Memory dirtied",
    "setup_ms": "Setup",
    "warnings": "Warnings",
    "reconciled": "Settled by reconciliation",
    "source_volumes_removed": "Removed from the source",
    "left_on_source": "Left on the source",
}

# The chart's drawing box (the SVG's viewBox) and margin.
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 600, 160, 4


def percent(migration: Migration) -> int:
    """Done, in whole percent: 100 once it succeeded."""
    if migration.status == "succeeded":
        return 100
    value = (migration.progress or {}).get("percent") or 0
    return max(0, min(100, round(value)))


def percent_text(migration: Migration | None) -> str:
    """Done, as shown beside a VM of an evacuation: "40 %", "100 %" once it succeeded,
    "" before libvirt reported any progress (or without a migration)."""
    if migration is None:
        return ""
    if migration.status != "succeeded" and (migration.progress or {}).get("percent") is None:
        return ""
    return f"{percent(migration)} %"


def progress_rows(progress: Mapping[str, Any]) -> list[FigureRow]:
    return [
        {"key": key, "label": label, "text": figure(progress.get(key), kind)} for key, label, kind in PROGRESS_FIELDS
    ]


def stat_rows(stats: Mapping[str, Any]) -> list[FigureRow]:
    return [
        {
            "key": key,
            "label": STAT_LABELS.get(key, key.replace("_", " ").capitalize()),
            "text": named_figure(key, value),
        }
        for key, value in (stats or {}).items()
    ]


def event_rows(events: Iterable[Mapping[str, Any]]) -> list[EventRow]:
    return [
        {"at": e.get("at", ""), "time": str(e.get("at", ""))[11:19], "message": e.get("message", "")} for e in events
    ]


def summary(migration: Migration) -> str:
    """One line for the dashboard: "40 % · 232.0 MiB left · 8.0 MiB/s"."""
    words = f"{percent(migration)} %"
    if migration.is_active:
        progress = migration.progress or {}
        if progress.get("data_remaining") is not None:
            words += f" · {size(progress['data_remaining'])} left"
        if progress.get("speed_bps"):
            words += f" · {rate(progress['speed_bps'])}"
    return words


def checks_html(checks: list[dict[str, Any]]) -> str:
    """The pre-flight check list, as the page shows it (an HTML fragment, escaped)."""
    if not checks:
        return ""
    # Rendered once per distinct list: a migration's state is sent twice a
    # second while it runs, its checks unchanged since they ran.
    return _rendered_checks(json.dumps(checks, sort_keys=True))


@functools.lru_cache(maxsize=64)
def _rendered_checks(checks_json: str) -> str:
    return render_to_string("migrations_app/_checks.html", {"checks": json.loads(checks_json)})


def chart_point(progress: Mapping[str, Any]) -> list[float] | None:
    """A sample for the chart: [sampled_at, bytes of memory (else data) remaining],
    or None for a sample taken before libvirt knew the size."""
    remaining = progress.get("memory_remaining")
    if remaining is None:
        remaining = progress.get("data_remaining")
    if remaining is None or not progress.get("sampled_at"):
        return None
    if not (progress.get("memory_total") or progress.get("data_total")):
        return None
    return [progress["sampled_at"], remaining]


def chart(samples: list[list[float]]) -> ChartDisplay:
    """The remaining-memory chart: SVG polyline points, and its scale in words."""
    if not samples:
        return {"points": "", "scale": ""}
    start = samples[0][0]
    xmax = max(samples[-1][0] - start, 1)
    ymax = max(s[1] for s in samples) or 1
    width, height, pad = CHART_WIDTH, CHART_HEIGHT, CHART_PAD
    points = " ".join(
        f"{(t - start) / xmax * (width - 2 * pad) + pad:.1f},{height - pad - y / ymax * (height - 2 * pad):.1f}"
        for t, y in samples
    )
    return {"points": points, "scale": f"top: {size(ymax)}, {duration(xmax)} shown"}


def line(migration: Migration) -> LineDisplay:
    """What the dashboard's row of a migration shows, formatted."""
    active = migration.is_active
    return {
        "status_colour": migration.status_colour,
        "finished": not active,
        "percent": percent(migration),
        "phase": migration.get_phase_display() if active and migration.phase else "",
        "summary": summary(migration),
    }


def display(migration: Migration) -> MigrationDisplay:
    """Everything the pages show of a migration, formatted."""
    return {
        **line(migration),
        "progress": progress_rows(migration.progress or {}),
        "stats": stat_rows(migration.stats or {}),
        "events": event_rows(migration.events[-50:]),
        "checks_html": checks_html(migration.checks),
        "chart": chart(migration.samples),
    }
