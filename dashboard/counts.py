"""The hosts' counts as the dashboard shows them, on its page and its socket."""

from typing import Any, TypedDict

from core.formatting import hosts_summary
from hosts import capacity


class HostCounts(TypedDict):
    """One row of the dashboard's host table, as its script redraws it."""

    name: str
    status: str
    domain_count: int
    running_count: int
    capacity: dict[str, Any] | None  # Capacity.as_bar(): widths, colour and words of the committed-memory bar
    maintenance: bool


class HostsMessage(TypedDict):
    hosts: list[HostCounts]
    hosts_summary: str  # the line above the host table: "2 hosts · 5 virtual machines, 3 running"


def host_counts() -> list[HostCounts]:
    """Every host's domain counts and committed memory: one query."""
    # with_counts() annotates domain_count and running_count, which the model does not declare.
    return [
        {
            "name": h.name,
            "status": h.status,
            "domain_count": getattr(h, "domain_count"),  # noqa: B009
            "running_count": getattr(h, "running_count"),  # noqa: B009
            "capacity": h.capacity.as_bar(),
            "maintenance": h.maintenance,
        }
        for h in capacity.with_counts()
    ]


def hosts_message(counts: list[HostCounts]) -> HostsMessage:
    """The hosts' part of a dashboard message: their counts, and the line
    above the host table in words, made from them."""
    summary = hosts_summary(
        len(counts), sum(h["domain_count"] for h in counts), sum(h["running_count"] for h in counts)
    )
    return {"hosts": counts, "hosts_summary": summary}
