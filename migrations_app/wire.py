"""What browsers receive about a migration: the typed shape of the payload of
``migration.state`` / ``migration.update`` WebSocket messages and of the
migration pages' initial state (see DESIGN.md, WebSocket contract)."""

from typing import Any, NotRequired, TypedDict


class MigrationEvent(TypedDict):
    id: int
    domain: str
    domain_id: int | None
    source: str
    target: str
    mode: str
    storage: str
    policy: str
    status: str
    status_display: str
    phase: str
    phase_display: str
    progress: dict[str, Any]
    stats: dict[str, Any]
    events: list[dict[str, Any]]  # the last 50: {"at": ISO time, "message": str, ...decision data}
    checks: list[dict[str, Any]]  # CheckResult.as_dict(): name, label, result, message, detail
    error: str
    error_detail: str
    cancel_requested: bool
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    url: str
    # Set when published: the publisher's clock, for measuring latency.
    sent_at: NotRequired[float]
