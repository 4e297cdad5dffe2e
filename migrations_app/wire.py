"""What browsers receive about a migration: the typed shape of the payload of
``migration.state`` / ``migration.update`` WebSocket messages and of the
migration pages' initial state (docs/ARCHITECTURE.md: where each contract lives)."""

from typing import Any, NotRequired, TypedDict


class FigureRow(TypedDict):
    key: str
    label: str
    text: str


class EventRow(TypedDict):
    at: str  # ISO time
    time: str  # HH:MM:SS
    message: str


class ChartDisplay(TypedDict):
    points: str  # bytes sent over time: an SVG polyline's points in a 600 x 160 box ("" if none)
    remaining_points: str  # a live migration's memory left to send, on the same scale ("" if none)
    scale: str  # "top: 1.0 GiB, 2 min 05 s shown"


class LineDisplay(TypedDict):
    """What the dashboard's row of a migration shows, formatted on the server."""

    status_colour: str
    finished: bool
    percent: int  # libvirt's figure: for a live migration, of the current pass (it goes back)
    bar: int | None  # a progress bar that never goes backwards (a cold copy), else None: no bar
    phase: str  # the phase while active, else ""
    summary: str  # the dashboard's line: "pass 3 · 232.0 MiB left · 8.0 MiB/s" (cold: "40 % · …")


class MigrationDisplay(LineDisplay):
    """What the pages show, formatted on the server: the JavaScript only places it."""

    headline: str  # where a running migration is ("Pass 3 over memory · …"), or how it ended
    progress: list[FigureRow]  # the live figures that have a value, in order; [] once it ended
    outcome: list[FigureRow]  # once it ended: total time, downtime, data sent, passes; [] before
    stats: list[FigureRow]  # the other final statistics; [] before the end
    events: list[EventRow]  # the newest 50
    events_total: int  # how many it has in all (its events page lists every one)
    checks_html: str  # the pre-flight check list, an escaped HTML fragment ("" if none ran)
    chart: ChartDisplay


class MigrationRow(TypedDict):
    """What every message about a migration names: which, from where to where, how far."""

    id: int
    domain: str
    domain_id: int | None
    source: str
    target: str
    mode: str
    status: str
    status_display: str
    phase: str
    error: str  # the plain words only: never libvirt's own text
    url: str
    waiting_reason: str  # queued only: why it has not started, with its place in line; else ""


class MigrationEvent(MigrationRow):
    storage: str
    policy: str
    phase_display: str
    progress: dict[str, Any]
    stats: dict[str, Any]
    events: list[dict[str, Any]]  # the newest 50: {"at": ISO time, "message": str, ...decision data}
    checks: list[dict[str, Any]]  # CheckResult.as_dict(): name, label, result, message, detail
    error_detail: str
    cancel_requested: bool
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    display: MigrationDisplay
    # Set when published: the publisher's clock, for measuring latency.
    sent_at: NotRequired[float]


class MigrationLine(MigrationRow):
    """A migration as the dashboard shows it: one row, not the whole record
    (about half a kilobyte where ``MigrationEvent`` is some twenty)."""

    sampled_at: float | None  # of the progress sample it reflects, to drop a stale one
    display: LineDisplay
    sent_at: NotRequired[float]
