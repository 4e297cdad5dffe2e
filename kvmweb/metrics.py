"""``/metrics``: kvmweb's figures for Prometheus, read from the database and Redis.

Every figure is computed at scrape time from what all processes share (the
database and the RQ queues), so any daphne of several answers the same and
nothing is lost when a worker dies; no process keeps counters of its own.

Not public: a scrape must carry ``Authorization: Bearer <KVMWEB_METRICS_TOKEN>``
or come from an address in ``KVMWEB_METRICS_ALLOW``. With neither configured,
the endpoint refuses everyone.
"""

import ipaddress
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db.models import Count, DurationField, ExpressionWrapper, F, FloatField, Q, Sum
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.http import HttpResponse, HttpResponseForbidden
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Seconds from start to finish of a migration, and milliseconds of downtime.
DURATION_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
DOWNTIME_BUCKETS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class KvmwebCollector:
    """Collects at each scrape; registered on a registry of its own, not the global one."""

    def collect(self):
        from hosts.models import Host, HostStatus
        from migrations_app.models import Migration, Status

        by_status = GaugeMetricFamily(
            "kvmweb_migrations", "Migrations by status and mode (all time).", labels=["status", "mode"]
        )
        counts = {(s, m): 0 for s in Status.values for m in ("live", "cold")}
        for row in Migration.objects.values("status", "mode").annotate(n=Count("pk")):
            counts[(row["status"], row["mode"])] = row["n"]
        for (status, mode), n in sorted(counts.items()):
            by_status.add_metric([status, mode], n)
        yield by_status

        succeeded = Migration.objects.filter(status=Status.SUCCEEDED, started_at__isnull=False)
        yield self._durations(succeeded)
        yield self._downtimes(succeeded)

        moved = GaugeMetricFamily(
            "kvmweb_migration_bytes_moved", "Bytes sent by succeeded migrations (all time).", labels=["mode"]
        )
        for mode in ("live", "cold"):
            total = (
                succeeded.filter(mode=mode)
                .annotate(b=Cast(KeyTextTransform("data_transferred", "stats"), FloatField()))
                .aggregate(s=Sum("b"))["s"]
            )
            moved.add_metric([mode], total or 0)
        yield moved

        hosts = GaugeMetricFamily("kvmweb_hosts", "Registered hosts by status.", labels=["status"])
        host_counts = dict.fromkeys(HostStatus.values, 0)
        for row in Host.objects.values("status").annotate(n=Count("pk")):
            host_counts[row["status"]] = row["n"]
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
    def _capacity():
        from hosts import capacity
        from hosts.models import Host

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

    def _durations(self, succeeded):
        family = HistogramMetricFamily(
            "kvmweb_migration_duration_seconds",
            "Start (after the pre-flight checks) to success, of succeeded migrations.",
            labels=["mode"],
        )
        duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
        for mode in ("live", "cold"):
            self._add(family, mode, succeeded.filter(mode=mode), duration, DURATION_BUCKETS, timedelta_seconds=True)
        return family

    def _downtimes(self, succeeded):
        family = HistogramMetricFamily(
            "kvmweb_migration_downtime_milliseconds",
            "The guest's downtime during the switch-over, of succeeded live migrations, as libvirt measured it.",
            labels=["mode"],
        )
        downtime = Cast(KeyTextTransform("downtime_ms", "stats"), FloatField())
        self._add(family, "live", succeeded.filter(mode="live"), downtime, DOWNTIME_BUCKETS)
        return family

    @staticmethod
    def _add(family, mode, queryset, value, buckets, timedelta_seconds=False):
        def limit(b):
            return timedelta(seconds=b) if timedelta_seconds else b

        aggregates = {f"le_{i}": Count("pk", filter=Q(v__lte=limit(b))) for i, b in enumerate(buckets)}
        row = queryset.annotate(v=value).filter(v__isnull=False).aggregate(n=Count("pk"), total=Sum("v"), **aggregates)
        total = row["total"] or 0
        if isinstance(total, timedelta):
            total = total.total_seconds()
        cumulative = [(str(b), row[f"le_{i}"]) for i, b in enumerate(buckets)] + [("+Inf", row["n"])]
        family.add_metric([mode], cumulative, total)

    @staticmethod
    def _queues():
        import django_rq
        from redis.exceptions import RedisError
        from rq import Worker

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


def _allowed_address(request):
    networks = settings.KVMWEB_METRICS_ALLOW
    if not networks:
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in networks)


def _valid_token(request):
    token = settings.KVMWEB_METRICS_TOKEN
    if not token:
        return False
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), token.encode())


@login_not_required
@require_GET
def metrics(request):
    if not (_valid_token(request) or _allowed_address(request)):
        return HttpResponseForbidden(
            "Metrics need the bearer token or an allowed address.\n", content_type="text/plain"
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KvmwebCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
