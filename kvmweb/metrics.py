"""``/metrics``: kvmweb's figures for Prometheus, read from the database and Redis.

Every figure comes from what all processes share (the database and the RQ
queues), so any daphne of several answers the same and nothing is lost when a
worker dies; no process keeps counters of its own. What only grows (migrations
ended, bytes moved, the duration and downtime histograms) is counted once, when
a migration ends, in rows of its own (``migrations_app.tallies``): a scrape
reads those rows, never the history of migrations. Units are Prometheus' base
units (seconds, bytes); counters end in ``_total``.

Not public: a scrape must carry ``Authorization: Bearer <KVMWEB_METRICS_TOKEN>``
or come from an address in ``KVMWEB_METRICS_ALLOW``. With neither configured,
the endpoint refuses everyone.
"""

import ipaddress
import secrets
from collections import defaultdict
from collections.abc import Iterator

import django_rq
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from redis.exceptions import RedisError
from rq import Worker

from hosts import capacity
from hosts.models import Host, HostStatus
from migrations_app import tallies
from migrations_app.models import ACTIVE, Migration

MODES = ("live", "cold")
OUTCOMES = ("succeeded", "failed", "cancelled")


class KvmwebCollector:
    """Collects at each scrape; registered on a registry of its own, not the global one."""

    def collect(self) -> Iterator[Metric]:

        active = GaugeMetricFamily(
            "kvmweb_migrations_active",
            "Migrations not ended yet, by status (queued, checking, running) and mode.",
            labels=["status", "mode"],
        )
        counts: dict[tuple[str, str], int] = {(s, m): 0 for s in ACTIVE for m in MODES}
        for row in Migration.objects.filter(status__in=ACTIVE).values("status", "mode").annotate(n=Count("pk")):
            counts[(row["status"], row["mode"])] = row["n"]
        for (status, mode), n in sorted(counts.items()):
            active.add_metric([status, mode], n)
        yield active
        yield from self._tallies()

        hosts = GaugeMetricFamily("kvmweb_hosts", "Registered hosts by status.", labels=["status"])
        host_counts = dict.fromkeys(HostStatus.values, 0)
        for host_row in Host.objects.values("status").annotate(n=Count("pk")):  # its own name: another row type
            host_counts[host_row["status"]] = host_row["n"]
        for status, n in sorted(host_counts.items()):
            hosts.add_metric([status], n)
        yield hosts
        up = GaugeMetricFamily("kvmweb_host_online", "1 if kvmweb last found the host online.", labels=["host"])
        for name, status in Host.objects.order_by("name").values_list("name", "status"):
            up.add_metric([name], 1 if status == HostStatus.ONLINE else 0)
        yield up
        yield from self._capacity()

        yield from self._queues()

    @staticmethod
    def _capacity() -> Iterator[Metric]:

        families = {
            "memory_committed": GaugeMetricFamily(
                "kvmweb_host_memory_committed_bytes",
                "Maximum memory of the guests a host runs and of those on their way in.",
                labels=["host"],
            ),
            "memory_capacity": GaugeMetricFamily(
                "kvmweb_host_memory_capacity_bytes",
                "Memory a host can promise guests: (total - reserved - huge pages) x allocation ratio.",
                labels=["host"],
            ),
            "vcpus_committed": GaugeMetricFamily(
                "kvmweb_host_vcpus_committed",
                "vCPUs of the guests a host runs and of those on their way in.",
                labels=["host"],
            ),
            "vcpu_capacity": GaugeMetricFamily(
                "kvmweb_host_vcpu_capacity", "vCPUs a host may run: CPUs x vCPU allocation ratio.", labels=["host"]
            ),
        }
        for host in capacity.with_committed(Host.objects.order_by("name")):
            for figure, family in families.items():
                family.add_metric([host.name], getattr(host.capacity, figure))
        yield from families.values()

    @staticmethod
    def _tallies() -> Iterator[Metric]:
        """The counters and histograms of ended migrations, as ``tallies`` keeps them (zero until one ends)."""
        rows: dict[str, dict[str, float]] = defaultdict(dict)
        for name, label_text, value in tallies.Tally.objects.values_list("name", "labels", "value"):
            rows[name][label_text] = value

        finished = CounterMetricFamily(
            "kvmweb_migrations_finished", "Migrations that ended, by mode and outcome.", labels=["mode", "outcome"]
        )
        for mode in MODES:
            for outcome in OUTCOMES:
                finished.add_metric(
                    [mode, outcome], rows[tallies.FINISHED_TOTAL].get(tallies.labels(mode=mode, outcome=outcome), 0)
                )
        yield finished

        moved = CounterMetricFamily(
            "kvmweb_migration_moved_bytes", "Bytes sent by succeeded migrations (memory and disks).", labels=["mode"]
        )
        for mode in MODES:
            moved.add_metric([mode], rows[tallies.MOVED_BYTES_TOTAL].get(tallies.labels(mode=mode), 0))
        yield moved

        helps = {
            "kvmweb_migration_duration_seconds": (
                "Start (after the pre-flight checks) to success, of succeeded migrations.",
                MODES,
            ),
            "kvmweb_migration_downtime_seconds": (
                "The guest's downtime during the switch-over, of succeeded live migrations, as libvirt measured it.",
                ("live",),
            ),
            "kvmweb_migration_prediction_error_ratio": (
                "How far the predicted duration of a succeeded live migration was from libvirt's own: "
                "|predicted - actual| / actual.",
                ("live",),
            ),
        }
        for name, (help_text, modes) in helps.items():
            family = HistogramMetricFamily(name, help_text, labels=["mode"])
            buckets, total = rows[f"{name}_bucket"], rows[f"{name}_sum"]
            for mode in modes:
                cumulative = [
                    (tallies.bound(upper), buckets.get(tallies.labels(mode=mode, le=tallies.bound(upper)), 0))
                    for upper in tallies.HISTOGRAMS[name]
                ]
                cumulative.append(("+Inf", buckets.get(tallies.labels(mode=mode, le="+Inf"), 0)))
                key = tallies.labels(mode=mode)
                family.add_metric([mode], cumulative, total.get(key, 0))
            yield family

    @staticmethod
    def _queues() -> Iterator[Metric]:

        depth = GaugeMetricFamily(
            "kvmweb_queue_jobs", "RQ jobs by queue and state (queued: waiting for a worker).", labels=["queue", "state"]
        )
        workers = GaugeMetricFamily("kvmweb_workers", "RQ workers alive, by queue they listen on.", labels=["queue"])
        up = GaugeMetricFamily("kvmweb_redis_up", "1 if Redis answered this scrape.")
        try:
            for name in settings.RQ_QUEUES:
                queue = django_rq.get_queue(name)
                depth.add_metric([name, "queued"], queue.count)
                depth.add_metric([name, "started"], queue.started_job_registry.count)
                depth.add_metric([name, "scheduled"], queue.scheduled_job_registry.count)
                depth.add_metric([name, "failed"], queue.failed_job_registry.count)
                workers.add_metric([name], Worker.count(queue=queue))
        except RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield depth
        yield workers


def _allowed_address(request: HttpRequest) -> bool:
    networks = settings.KVMWEB_METRICS_ALLOW
    if not networks:
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in networks)


def _valid_token(request: HttpRequest) -> bool:
    token = settings.KVMWEB_METRICS_TOKEN
    if not token:
        return False
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), token.encode())


@login_not_required
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not (_valid_token(request) or _allowed_address(request)):
        return HttpResponseForbidden(
            "Metrics need the bearer token or an allowed address.\n", content_type="text/plain"
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KvmwebCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
