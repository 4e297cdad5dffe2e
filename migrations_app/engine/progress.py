"""The two records a running migration keeps of its transfer: the progress
sample the browser draws, and the statistics kept when it ends."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from hosts.libvirt import JobStats


def progress_sample(
    *,
    total: int,
    processed: int,
    remaining: int,
    speed_bps: int,
    eta_seconds: float | None,
    elapsed: float,
    created_volumes: Iterable[str],
    percent: float | None = None,
    **figures: Any,
) -> dict[str, Any]:
    """One progress sample, live or cold. ``figures`` adds what only one kind
    knows (memory and disk parts, dirty rate, pass, downtime...)."""
    if percent is None:
        percent = 100.0 * (total - remaining) / total if total else 0.0
    return {
        "percent": round(max(0.0, min(100.0, percent)), 1),
        "data_total": total,
        "data_processed": processed,
        "data_remaining": remaining,
        **figures,
        "speed_bps": speed_bps,
        "eta_seconds": eta_seconds,
        "elapsed": round(elapsed, 1),
        "sampled_at": time.time(),
        "created_volumes": list(created_volumes),
    }


def live_sample(
    stats: JobStats,
    elapsed: float,
    downtime_ms: int | None,
    created_volumes: Iterable[str] = (),
    convergence: str | None = None,
    **learned: Any,
) -> dict[str, Any]:
    """A progress sample from libvirt's job statistics (``learned``: what the governor keeps pass by pass)."""
    total = stats.data_total or (stats.memory_total + stats.disk_total)
    remaining = stats.data_remaining
    speed = stats.memory_bps + stats.disk_bps
    net = speed - stats.dirty_rate_bps
    return progress_sample(
        total=total,
        processed=stats.data_processed,
        remaining=remaining,
        speed_bps=speed,
        eta_seconds=round(remaining / net, 1) if net > 0 and remaining else None,
        elapsed=elapsed,
        created_volumes=created_volumes,
        memory_total=stats.memory_total,
        memory_processed=stats.memory_processed,
        memory_remaining=stats.memory_remaining,
        disk_total=stats.disk_total,
        disk_processed=stats.disk_processed,
        disk_remaining=stats.disk_remaining,
        dirty_rate_bps=stats.dirty_rate_bps,
        iteration=stats.iteration,
        downtime_ms=downtime_ms,
        throttle_percent=stats.throttle_percent,
        # policies.CONVERGING, SLOWLY or NOT_CONVERGING, as last told (from the second pass on).
        convergence=convergence if stats.iteration >= 2 else None,
        **learned,
    )


def job_record(stats: JobStats, *, completed: bool) -> dict[str, Any]:
    """What a live transfer measured, as the migration's statistics keep it.

    From a sample taken while it ran (``completed=False``): what was sent and
    how fast, so the next request's checks can warn from it. From libvirt's
    statistics of the completed job: also its time, downtime and parts."""
    record: dict[str, Any] = {
        "data_transferred": stats.data_processed,
        "iterations": stats.iteration,
        "speed_bps": stats.memory_bps,
        "dirty_rate_bps": stats.dirty_rate_bps,
    }
    constant = stats.raw.get("memory_constant")
    if constant is not None and stats.memory_total:
        # The share of memory that was not zero pages (QEMU's count of them): what
        # the next prediction's first pass sends (measure.wire_share).
        page = stats.raw.get("memory_page_size") or 4096
        record["wire_share"] = round(max(0.0, min(1.0, 1 - constant * page / stats.memory_total)), 3)
    if completed:
        record.update(
            time_ms=stats.elapsed_ms,
            downtime_ms=stats.downtime_ms,
            memory_transferred=stats.memory_processed,
            disk_transferred=stats.disk_processed,
            setup_ms=stats.setup_ms,
        )
    return record
