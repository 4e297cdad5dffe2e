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

from core.formatting import duration, figure, named_figure, rate, size

from .policies import CONVERGENCE_WORDS, NOT_CONVERGING
from .wire import ChartDisplay, EventRow, FigureRow, LineDisplay, MigrationDisplay

if TYPE_CHECKING:
    from .models import Migration

# The figures of a running migration, in order: (key, label, kind). Only those
# with a value are shown, and only those of its mode (see progress_rows).
LIVE_FIELDS = [
    ("iteration", "Pass over memory", "plain"),
    ("memory_remaining", "Memory left to send", "bytes"),
    ("disk_remaining", "Disk left to copy", "bytes"),
    ("data_processed", "Sent so far", "bytes"),
    ("speed_bps", "Speed", "rate"),
    ("dirty_rate_bps", "The guest dirties", "rate"),
    ("convergence", "How it goes", "convergence"),
    ("downtime_ms", "Allowed downtime", "ms"),
    ("throttle_percent", "Guest CPUs slowed by", "percent"),
    ("eta_seconds", "Time left (estimate)", "seconds"),
    # Said once the first pass is over (engine/live.Governor.refine).
    ("prediction_sentence", "Prediction", "plain"),
    ("elapsed", "Elapsed", "seconds"),
]
COLD_FIELDS = [
    ("data_processed", "Copied", "bytes"),
    ("data_total", "To copy", "bytes"),
    ("speed_bps", "Speed", "rate"),
    ("eta_seconds", "Time left (estimate)", "seconds"),
    ("elapsed", "Elapsed", "seconds"),
]

# The final statistics the outcome card shows, in order; the rest are listed
# under "Final statistics".
OUTCOME_STATS = ("time_ms", "downtime_ms", "data_transferred", "iterations")

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
    """Done, in whole percent: 100 once it succeeded. For a live migration this is
    libvirt's figure for the current pass: it goes back at each pass, so the pages
    do not draw it as a bar (see bar)."""
    if migration.status == "succeeded":
        return 100
    value = (migration.progress or {}).get("percent") or 0
    return max(0, min(100, round(value)))


def bar(migration: Migration) -> int | None:
    """The width of a progress bar that never goes backwards, or None for no bar.

    Only a cold migration's copy has one: bytes copied of the bytes to copy only
    grow. A live migration's percentage is that of its current pass (libvirt
    starts again at each pass as the guest dirties memory); its page shows the
    pass and the memory left instead."""
    if migration.mode != "cold" or not migration.is_active:
        return None
    progress = migration.progress or {}
    if progress.get("percent") is None:
        return None
    return max(0, min(100, round(float(progress["percent"]))))


def percent_text(migration: Migration | None) -> str:
    """How far, as shown beside a VM of an evacuation: "40 %", "100 %" once it
    succeeded, "pass 4 · 196.0 MiB left" for a live migration past its first pass
    (its percentage would start again at each pass), "" before libvirt reported
    any progress (or without a migration)."""
    if migration is None:
        return ""
    progress = migration.progress or {}
    if migration.status != "succeeded" and progress.get("percent") is None:
        return ""
    if migration.is_active and migration.mode != "cold" and (progress.get("iteration") or 0) >= 2:
        left = progress.get("memory_remaining")
        return f"pass {progress['iteration']}" + (f" · {size(left)} left" if left is not None else "")
    return f"{percent(migration)} %"


def _progress_figure(key: str, value: Any, kind: str) -> str:
    if kind == "convergence":
        return CONVERGENCE_WORDS.get(value, str(value))
    if kind == "percent":
        return f"{value} %"
    return figure(value, kind)


def progress_rows(progress: Mapping[str, Any], mode: str = "live") -> list[FigureRow]:
    """The figures of a running migration that have a value: a live one's pass,
    memory left, rates and how it goes; a cold one's copy. Never a row of dashes."""
    fields = COLD_FIELDS if mode == "cold" else LIVE_FIELDS
    rows: list[FigureRow] = []
    for key, label, kind in fields:
        value = progress.get(key)
        if value is None or value == "":
            continue
        if key == "throttle_percent" and not value:
            continue  # the guest was not slowed down
        if key == "disk_remaining" and not progress.get("disk_total"):
            continue  # shared storage: no disk is copied
        if key == "dirty_rate_bps" and (progress.get("iteration") or 0) < 2:
            continue  # known from the second pass on: "0 B/s" before it would be a guess
        if key == "eta_seconds" and progress.get("convergence") == NOT_CONVERGING:
            continue  # a time left computed from a transfer that does not converge is a guess
        rows.append({"key": key, "label": label, "text": _progress_figure(key, value, kind)})
    return rows


def stat_rows(stats: Mapping[str, Any], skip: Iterable[str] = ()) -> list[FigureRow]:
    """Final statistics with a value (a cold move has no downtime to tell)."""
    skipped = set(skip)
    return [
        {
            "key": key,
            "label": STAT_LABELS.get(key, key.replace("_", " ").capitalize()),
            "text": named_figure(key, value),
        }
        for key, value in (stats or {}).items()
        if value is not None and key not in skipped
    ]


def outcome_rows(migration: Migration) -> list[FigureRow]:
    """What a finished migration did: its total time, downtime, data sent and passes.

    From the final statistics; a failed or cancelled one has fewer (no downtime:
    the guest never paused for a switch-over), its time from its record."""
    if migration.is_active:
        return []
    stats = dict(migration.stats or {})
    if stats.get("time_ms") is None and migration.started_at and migration.finished_at:
        stats["time_ms"] = round((migration.finished_at - migration.started_at).total_seconds() * 1000)
    if migration.status != "succeeded" or migration.mode == "cold":
        stats.pop("downtime_ms", None)
    if stats.get("data_transferred") is None and (migration.progress or {}).get("data_processed") is not None:
        stats["data_transferred"] = migration.progress["data_processed"]
    rows = stat_rows({key: stats.get(key) for key in OUTCOME_STATS})
    # What the pre-flight check predicted, beside what happened (a succeeded live move).
    predicted = {}
    if migration.prediction_outcome() is not None:
        predicted = {
            "time_ms": duration(migration.predicted_seconds or 0),
            "downtime_ms": f"{migration.predicted_downtime_ms} ms",
            "iterations": str(migration.predicted_passes),
        }
    for row in rows:
        if row["key"] == "time_ms":
            row["text"] = duration(stats["time_ms"] / 1000)  # "12 s", not "11800 ms"
        if row["key"] in predicted:
            row["text"] += f" (predicted {predicted[row['key']]})"
        if row["key"] == "data_transferred" and migration.mode == "cold":
            row["label"] = "Disk data copied"
    return rows


def headline(migration: Migration) -> str:
    """The progress card's sentence: where a running migration is, or how it ended."""
    progress = migration.progress or {}
    if migration.is_active:
        if migration.status != "running" or not progress.get("sampled_at"):
            return ""
        if migration.mode == "cold":
            if progress.get("data_total"):
                return f"{size(progress.get('data_processed'))} of {size(progress['data_total'])} copied"
            return ""
        parts = []
        if progress.get("iteration"):
            parts.append(f"Pass {progress['iteration']} over memory")
        if progress.get("memory_remaining") is not None and progress.get("memory_total"):
            parts.append(f"{size(progress['memory_remaining'])} of {size(progress['memory_total'])} left to send")
        if progress.get("disk_total") and progress.get("disk_remaining"):
            parts.append(f"{size(progress['disk_remaining'])} of disk left to copy")
        return " · ".join(parts)
    took = duration(outcome_time(migration))
    if migration.status == "succeeded":
        return f"Moved to {migration.target_name} in {took}."
    during = f" during “{migration.get_phase_display().lower()}”" if migration.phase not in ("", "done") else ""
    if migration.status == "cancelled":
        return f"Cancelled{during}, after {took}." if migration.started_at else "Cancelled before it started."
    return f"Failed{during}, after {took}." if migration.started_at else "Failed before it started."


def outcome_time(migration: Migration) -> float | None:
    if (migration.stats or {}).get("time_ms") is not None:
        return float(migration.stats["time_ms"]) / 1000
    if migration.started_at and migration.finished_at:
        return (migration.finished_at - migration.started_at).total_seconds()
    return None


def event_rows(events: Iterable[Mapping[str, Any]]) -> list[EventRow]:
    return [
        {"at": e.get("at", ""), "time": str(e.get("at", ""))[11:19], "message": e.get("message", "")} for e in events
    ]


def summary(migration: Migration) -> str:
    """One line for the dashboard: "pass 3 · 232.0 MiB left · 8.0 MiB/s" (live),
    "40 % · 232.0 MiB left · 8.0 MiB/s" (cold), "100 %" once it succeeded."""
    progress = migration.progress or {}
    if not migration.is_active:
        return f"{percent(migration)} %" if migration.status == "succeeded" else migration.get_status_display()
    if migration.mode == "cold" or not progress.get("iteration"):
        words = f"{percent(migration)} %"
    else:
        words = f"pass {progress['iteration']}"
    left = progress.get("memory_remaining") if migration.mode != "cold" else None
    if left is None:
        left = progress.get("data_remaining")
    if left is not None:
        words += f" · {size(left)} left"
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
    """A sample for the chart: [sampled_at, bytes sent so far, bytes of memory (else
    data) left], or None for a sample taken before libvirt knew the size."""
    remaining = progress.get("memory_remaining")
    if remaining is None:
        remaining = progress.get("data_remaining")
    if remaining is None or not progress.get("sampled_at"):
        return None
    if not (progress.get("memory_total") or progress.get("data_total")):
        return None
    return [progress["sampled_at"], progress.get("data_processed") or 0, remaining]


def _polyline(points: list[tuple[float, float]], xmax: float, ymax: float) -> str:
    width, height, pad = CHART_WIDTH, CHART_HEIGHT, CHART_PAD
    return " ".join(
        f"{t / xmax * (width - 2 * pad) + pad:.1f},{height - pad - y / ymax * (height - 2 * pad):.1f}"
        for t, y in points
    )


def chart(migration: Migration) -> ChartDisplay:
    """The chart of the kept samples: bytes sent over time (they only grow), and
    for a live migration the memory left to send (it shrinks at each pass, or
    does not: that is convergence to see). Drawn the same live and afterwards.

    Its time runs from the start of the move to its end (or the last sample):
    a short migration with one sample still draws from nothing sent to all of it.
    Samples kept before bytes sent were (pairs) draw only the memory left."""
    samples = [s for s in migration.samples or [] if len(s) >= 2]
    start = migration.started_at.timestamp() if migration.started_at else (samples[0][0] if samples else None)
    if start is None:
        return {"points": "", "remaining_points": "", "scale": ""}
    sent = [(s[0] - start, s[1]) for s in samples if len(s) >= 3]
    left = [(s[0] - start, s[-1]) for s in samples]
    end = migration.finished_at.timestamp() - start if migration.finished_at else (left[-1][0] if left else 0)
    if sent or migration.status == "succeeded" or migration.mode == "cold":
        sent.insert(0, (0.0, 0))
        total = (migration.stats or {}).get("data_transferred")
        if migration.finished_at and total is not None:
            sent.append((end, max(total, sent[-1][1])))  # bytes sent never go back
    if migration.mode == "cold":
        left = []  # what is left of a copy mirrors what was copied: one line says it
    if len(sent) < 2 and len(left) < 2:
        return {"points": "", "remaining_points": "", "scale": ""}
    # No floor of a whole second: a move shorter than that still spans the chart.
    xmax = max(end, *(t for t, _ in sent + left), 0.001)
    ymax = max([y for _, y in sent + left] or [0]) or 1
    # A sample taken a little before the recorded start (clocks of two processes) stays in the box.
    sent = [(max(t, 0), y) for t, y in sent]
    left = [(max(t, 0), y) for t, y in left]
    return {
        "points": _polyline(sent, xmax, ymax) if len(sent) >= 2 else "",
        "remaining_points": _polyline(left, xmax, ymax) if len(left) >= 2 else "",
        "scale": f"top: {size(ymax)}, {duration(xmax)} shown",
    }


def line(migration: Migration) -> LineDisplay:
    """What the dashboard's row of a migration shows, formatted."""
    active = migration.is_active
    return {
        "status_colour": migration.status_colour,
        "finished": not active,
        "percent": percent(migration),
        "bar": bar(migration),
        "phase": migration.get_phase_display() if active and migration.phase else "",
        "summary": summary(migration),
    }


# Events a migration's page shows (the newest); the rest are on its events page.
EVENTS_SHOWN = 50


def display(migration: Migration) -> MigrationDisplay:
    """Everything the pages show of a migration, formatted. Live figures only
    while it runs; its outcome once it ended."""
    events = migration.events or []
    return {
        **line(migration),
        "headline": headline(migration),
        "progress": progress_rows(migration.progress or {}, migration.mode) if migration.is_active else [],
        "outcome": outcome_rows(migration),
        "stats": [] if migration.is_active else stat_rows(migration.stats or {}, skip=OUTCOME_STATS),
        "events": event_rows(events[-EVENTS_SHOWN:]),
        "events_total": len(events),
        "checks_html": checks_html(migration.checks),
        "chart": chart(migration),
    }
