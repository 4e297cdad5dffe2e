"""Running totals of ended migrations, for Prometheus' counters and histograms.

A migration ends in a worker; ``/metrics`` is served by whichever web process
the scrape reaches, on this machine or another. So the totals live in the
database (not in a process's memory, nor in prometheus-client's multiprocess
files, which only processes on one machine share), each one a row that
``migration_finished`` increments in place once, when the migration ends. A
scrape reads a fixed number of rows, however long the history.
"""

from __future__ import annotations

from typing import Any

from django.db import models, transaction
from django.db.models import F

# Upper bounds of the histograms' buckets, in seconds (Prometheus' base unit).
DURATION_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
DOWNTIME_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# |predicted - actual| / actual of a live migration's duration (the goal: 0.25).
PREDICTION_ERROR_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
HISTOGRAMS = {
    "kvmweb_migration_duration_seconds": DURATION_BUCKETS,
    "kvmweb_migration_downtime_seconds": DOWNTIME_BUCKETS,
    "kvmweb_migration_prediction_error_ratio": PREDICTION_ERROR_BUCKETS,
}
FINISHED_TOTAL = "kvmweb_migrations_finished_total"
MOVED_BYTES_TOTAL = "kvmweb_migration_moved_bytes_total"


def labels(**values: str) -> str:
    """Labels as one string, in name order: the row's key and the exposition's text."""
    return ",".join(f"{name}={value}" for name, value in sorted(values.items()))


def parse_labels(text: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in text.split(",")) if text else {}


def bound(upper: float) -> str:
    """A bucket's ``le`` as Prometheus' client writes it (``5.0``, ``0.025``)."""
    return str(float(upper))


class Tally(models.Model):
    """One sample of a counter or histogram: ``name`` and ``labels`` as exposed, ``value`` only grows."""

    name = models.CharField(max_length=80)
    labels = models.CharField(max_length=200, blank=True)
    value = models.FloatField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "labels"], name="tally_name_labels")]

    def __str__(self) -> str:
        return f"{self.name}{{{self.labels}}} {self.value:g}"


def _add(increments: dict[tuple[str, str], float]) -> None:
    """Add each value to its row, creating missing rows first; safe when two workers end migrations at once
    (each increment is done by the database), and in one transaction, so a scrape never sees half of them."""
    with transaction.atomic():
        Tally.objects.bulk_create([Tally(name=n, labels=la) for n, la in increments], ignore_conflicts=True)
        for (name, label_text), amount in increments.items():
            Tally.objects.filter(name=name, labels=label_text).update(value=F("value") + amount)


def _observe(increments: dict[tuple[str, str], float], histogram: str, mode: str, value: float) -> None:
    for upper in HISTOGRAMS[histogram]:
        if value <= upper:
            increments[(f"{histogram}_bucket", labels(mode=mode, le=bound(upper)))] = 1
    increments[(f"{histogram}_bucket", labels(mode=mode, le="+Inf"))] = 1
    increments[(f"{histogram}_count", labels(mode=mode))] = 1
    increments[(f"{histogram}_sum", labels(mode=mode))] = value


def increments_for(migration: Any) -> dict[tuple[str, str], float]:
    """What one ended migration adds: its outcome, and for a success its duration, downtime and bytes."""
    mode, status, stats = migration.mode, migration.status, migration.stats or {}
    increments: dict[tuple[str, str], float] = {(FINISHED_TOTAL, labels(mode=mode, outcome=status)): 1}
    if status != "succeeded":
        return increments
    if migration.started_at and migration.finished_at:
        seconds = (migration.finished_at - migration.started_at).total_seconds()
        _observe(increments, "kvmweb_migration_duration_seconds", mode, seconds)
    if mode == "live" and stats.get("downtime_ms") is not None:
        _observe(increments, "kvmweb_migration_downtime_seconds", mode, float(stats["downtime_ms"]) / 1000)
    predicted = getattr(migration, "predicted_seconds", None)
    if mode == "live" and predicted is not None and stats.get("time_ms"):
        actual = float(stats["time_ms"]) / 1000
        _observe(increments, "kvmweb_migration_prediction_error_ratio", mode, abs(predicted - actual) / actual)
    if stats.get("data_transferred"):
        increments[(MOVED_BYTES_TOTAL, labels(mode=mode))] = float(stats["data_transferred"])
    return increments


def migration_finished(migration: Any) -> None:
    """Count a migration that has just ended. Called once per migration: by the
    one process whose conditional UPDATE moved it to its final state."""
    _add(increments_for(migration))
