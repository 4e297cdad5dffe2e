"""Requesting and cancelling migrations: the one path the API, the form and the
command line all go through."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import django_rq
from django.db import IntegrityError, transaction
from rq.job import Job
from rq.utils import now

from core.formatting import size
from core.queues import WAITING
from core.records import InvalidTransition
from core.roles import AnyUser
from hosts import capacity
from hosts.libvirt import HostError, open_host
from hosts.models import Domain, Host, HostStatus

from . import checks, events
from .checks import CheckResult, split_brain_message
from .jobs import run_migration
from .models import ACTIVE, AuditAction, AuditEntry, Migration, Mode, Status, StorageMode
from .policies import POLICIES, get_policy
from .request import BANDWIDTH_MIB, SHUTDOWN_TIMEOUT, MigrationRequest, parallel_connections_error
from .waiting import job_id, retry_id

log = logging.getLogger(__name__)


class MigrationRefused(Exception):
    """A request that cannot be accepted; ``status`` is the HTTP status to answer."""

    def __init__(
        self, message: str, status: int = 400, field: str | None = None, running: Migration | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field
        # The migration in the way ("already being migrated"), for pages to link to.
        self.running = running


def validate(req: MigrationRequest) -> None:
    """Refuse what cannot be right whatever the hosts say, and fill in the
    target pool a copy left empty. The form and the API have refused
    out-of-range numbers already; a request made in code (an evacuation's)
    meets the same limits here."""
    domain, target = req.domain, req.target
    if domain.split_brain:
        raise MigrationRefused(split_brain_message(domain), status=409)
    if target.pk == domain.host_id:
        raise MigrationRefused(
            f"{domain.name} is already on {target.name}. Choose another target host.", field="target_host"
        )
    if req.mode not in Mode.values:
        raise MigrationRefused(f"Mode must be 'live' or 'cold', not {req.mode!r}.", field="mode")
    if req.storage not in StorageMode.values:
        raise MigrationRefused(f"Storage must be 'shared' or 'copy', not {req.storage!r}.", field="storage")
    if get_policy(req.policy) is None:
        raise MigrationRefused(
            f"There is no policy {req.policy!r}. Choose one of: {', '.join(POLICIES)}.", field="policy"
        )
    if req.bandwidth_mib is not None and not BANDWIDTH_MIB.min <= req.bandwidth_mib <= BANDWIDTH_MIB.max:
        raise MigrationRefused(
            f"The bandwidth limit must be from {BANDWIDTH_MIB.min} to {BANDWIDTH_MIB.max} MiB/s, or empty for none.",
            field="bandwidth_mib",
        )
    if parallel_connections_error(req.parallel_connections):
        raise MigrationRefused(parallel_connections_error(req.parallel_connections), field="parallel_connections")
    if not SHUTDOWN_TIMEOUT.min <= req.shutdown_timeout <= SHUTDOWN_TIMEOUT.max:
        raise MigrationRefused(
            f"The wait for a clean shutdown must be from {SHUTDOWN_TIMEOUT.min} to {SHUTDOWN_TIMEOUT.max} seconds.",
            field="shutdown_timeout",
        )
    for role, host, field in (("source", domain.host, None), ("target", target, "target_host")):
        if host.status != HostStatus.ONLINE:
            raise MigrationRefused(
                f"The {role} host {host.name} is {host.get_status_display().lower()}: "
                f"{(host.status_reason or 'sync it first').rstrip('.')}.",
                status=409,
                field=field,
            )
    if target.maintenance:
        raise MigrationRefused(
            f"{target.name} is in maintenance: no VM may move onto it until an operator takes it out "
            "of maintenance. Choose another target host.",
            status=409,
            field="target_host",
        )
    # Last: a request refused for the hosts' sake says so, not that a pool is full.
    if req.storage == StorageMode.COPY and not req.target_pool:
        req.target_pool = default_target_pool(domain, target)
    elif req.storage == StorageMode.COPY and not target.pools.filter(name=req.target_pool).exists():
        names = sorted(target.pools.filter(active=True).values_list("name", flat=True))
        raise MigrationRefused(
            f"{target.name} has no storage pool named {req.target_pool}. Choose one of: "
            f"{', '.join(names) or 'none (it has no active pool)'}; or leave the pool empty for the default.",
            field="target_pool",
        )


def default_target_pool(domain: Domain, target: Host) -> str:
    """The pool on ``target`` to copy ``domain``'s disks into when none is
    chosen: the one named like the source disks' pool, else the one with the
    most room; refused, saying what to do, when none can hold them."""
    pool, need, most = capacity.copy_pool_for(domain, target)
    if pool is not None:
        return pool
    if not target.pools.filter(active=True).exists():
        problem = f"{target.name} has no active storage pool to copy the disks of {domain.name} into"
    else:
        problem = (
            f"No storage pool on {target.name} has room for the {size(need)} of disks of {domain.name} "
            f"(the most free is {size(most)})"
        )
    raise MigrationRefused(
        f"{problem}. Free space in a pool there (or define and start one) and refresh its inventory, "
        "choose another target host, or keep the disks on shared storage.",
        field="target_pool",
    )


def dry_run(user: AnyUser, req: MigrationRequest) -> list[CheckResult]:
    """Run the pre-flight checks and say what they found; change nothing."""
    validate(req)
    results = checks.run_checks(req)
    worst = _worst(results)
    AuditEntry.record(
        AuditAction.CHECK,
        f"Pre-flight checks for {req.mode} migration of {req.domain.name} from "
        f"{req.domain.host.name} to {req.target.name}: {worst}.",
        user=user,
        domain=req.domain.name,
        source=req.domain.host.name,
        target=req.target.name,
        outcome=worst,
        checks=[r.as_dict() for r in results],
    )
    return results


def _worst(results: list[CheckResult]) -> str:
    outcomes = {r.result for r in results}
    return "fail" if "fail" in outcomes else "warn" if "warn" in outcomes else "pass"


def request_migration(user: AnyUser, req: MigrationRequest, queue: bool = True) -> Migration:
    """Create the migration and queue it; the checks run again in the worker.

    ``queue=False``: the caller runs it (an evacuation runs its moves itself)."""
    validate(req)
    domain = req.domain
    try:
        with transaction.atomic():
            migration = Migration.objects.create(
                domain=domain,
                domain_name=domain.name,
                domain_uuid=domain.uuid,
                source=domain.host,
                source_name=domain.host.name,
                target=req.target,
                target_name=req.target.name,
                requested_by_id=user.pk if user.is_authenticated else None,
                requested_by_name=user.get_username(),
                mode=req.mode,
                storage=req.storage,
                target_pool=req.target_pool,
                policy=req.policy,
                bandwidth_mib=req.bandwidth_mib,
                parallel_connections=req.parallel_connections,
                shutdown_timeout=req.shutdown_timeout,
                force_off=req.force_off,
                keep_source_volumes=req.keep_source_volumes,
                replace_own_leftovers=req.replace_own_leftovers,
                eject_media=req.eject_media,
                rule_override=req.rule_override,
            )
            override: dict[str, Any] = {"rule_override": req.rule_override} if req.rule_override else {}
            AuditEntry.record(
                AuditAction.REQUEST,
                f"{user.get_username()} asked for a {req.mode} migration of {domain.name} "
                f"from {domain.host.name} to {req.target.name}"
                + (f", against any placement rule it breaks, because: {req.rule_override}" if req.rule_override else "")
                + ".",
                user=user,
                migration=migration,
                mode=req.mode,
                storage=req.storage,
                target_pool=req.target_pool,
                policy=req.policy,
                bandwidth_mib=req.bandwidth_mib,
                parallel_connections=req.parallel_connections,
                **override,
            )
            if queue:
                transaction.on_commit(lambda: enqueue(migration))
    except IntegrityError:
        running = Migration.objects.filter(domain_uuid=domain.uuid, status__in=ACTIVE).first()
        which = f" (#{running.pk}, {running.status})" if running else ""
        raise MigrationRefused(
            f"{domain.name} is already being migrated{which}. Wait for it to finish or cancel it.",
            status=409,
            running=running,
        ) from None
    events.publish_migration(migration)
    return migration


def enqueue(migration: Migration) -> None:
    job = django_rq.get_queue("migrations").enqueue(
        run_migration, migration.pk, job_id=job_id(migration.pk), result_ttl=86400
    )
    migration.set_job_id(job.id)


def requeue_lost(grace_seconds: float = 30) -> list[int]:
    """Queue again every queued migration whose job Redis no longer has.

    A Redis restarted without persistence (or flushed) loses the queue: the
    migrations stay `queued` in the database and no worker would ever take
    them. ``grace_seconds`` leaves alone a migration just created, whose job
    the request's commit is about to queue. Returns the ids queued again.
    """
    queue = django_rq.get_queue("migrations")
    scheduled = set(queue.scheduled_job_registry.get_job_ids())
    requeued = []
    stale = Migration.objects.filter(status=Status.QUEUED, created_at__lt=now() - timedelta(seconds=grace_seconds))
    for migration in stale:
        ids = [job_id(migration.pk), retry_id(migration.pk)]
        if scheduled.intersection(ids):
            # Waiting for a slot. (A retry schedules its successor under its
            # own id, so the job's status may say finished while it waits.)
            continue
        jobs = Job.fetch_many(ids, queue.connection)
        if any(job is not None and job.get_status(refresh=False) in WAITING for job in jobs):
            continue
        log.warning("migration %s was queued but its job is gone (Redis restarted?): queueing it again", migration.pk)
        enqueue(migration)
        requeued.append(migration.pk)
    return requeued


def cancel(user: AnyUser, migration: Migration) -> str:
    """Cancel a queued migration, or ask the worker to stop a running one
    and abort its libvirt job from here at once."""
    try:
        outcome = migration.request_cancel(user)
    except InvalidTransition as e:
        raise MigrationRefused(str(e), status=409) from None
    if outcome == "requested":
        abort_live_job(migration)
    return outcome


def abort_live_job(migration: Migration) -> bool:
    """Abort a running live migration's libvirt job from the web process,
    rather than wait for the worker's next poll (half a second, or never if
    the worker died). The worker, or reconciliation, then settles it."""
    if migration.status != Status.RUNNING or migration.mode != Mode.LIVE or migration.source is None:
        return False
    try:
        with open_host(migration.source.connect_uri()) as src:
            return src.abort_job(migration.domain_uuid)
    except HostError:
        log.warning("could not abort migration %s from the web process", migration.pk, exc_info=True)
        return False
