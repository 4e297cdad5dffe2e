"""Inventory sync: make the database say what libvirt says, one host at a time."""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from . import signals, sshkeys
from .libvirt import (
    DomainInfo,
    HostError,
    HostUnreachable,
    HostURI,
    InvalidURI,
    Inventory,
    NetworkInfo,
    PoolInfo,
    check_uri,
    open_host,
    probe,
    refused,
)
from .libvirt.uri import unreachable_message
from .models import (
    ACTIVITY,
    Domain,
    DomainDefinition,
    DomainStateChoices,
    Host,
    HostStatus,
    Network,
    StoragePool,
    write_known_hosts,
)

log = logging.getLogger(__name__)

DOMAIN_FIELDS = (*DomainDefinition.FACTS, "host_id", "split_brain", "moved_from_id", "last_seen")
DEFINITION_FIELDS = (*DomainDefinition.FACTS, "running_since")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
M = TypeVar("M", StoragePool, Network)


@dataclass
class SyncResult:
    host: str
    online: bool
    domains: int = 0
    created: int = 0
    moved: int = 0
    removed: int = 0
    error: str = ""

    def __str__(self) -> str:
        if not self.online:
            return f"{self.host}: unreachable — {self.error}"
        return f"{self.host}: {self.domains} domains ({self.created} new, {self.moved} moved here, {self.removed} gone)"


def read_inventory(uri: str, timeout: float | None = None) -> Inventory | HostError:
    """What libvirt says of one host: an Inventory, or the HostError that stopped it."""
    try:
        with open_host(uri, timeout=timeout) as conn:
            return conn.inventory()
    except HostError as e:
        return e


@dataclass
class KeyOffer:
    """The SSH host key a host offered when kvmweb would not (or could not) log in with the trusted one."""

    key: str


def read_host(host: Host, timeout: float | None = None) -> Inventory | HostError | KeyOffer:
    """Read one host without touching the database (it runs in reader threads).

    Returns an Inventory, a HostError, or a KeyOffer: a host over SSH whose
    key nobody confirmed yet, or whose key changed, is not logged in to; the
    key it offers is fetched instead, for an operator to compare and confirm.
    """
    try:
        parsed = check_uri(host.uri)
    except InvalidURI as e:
        return refused(e, host.uri)
    if parsed.transport in ("ssh", "libssh") and host.host_key_state != "trusted":
        return _scan(parsed, timeout)
    inventory = read_inventory(host.uri, timeout)
    if isinstance(inventory, HostError) and inventory.code == "host_key":
        # Whatever ssh said, the key the host offers now tells new from changed.
        offer = _scan(parsed, timeout)
        return offer if isinstance(offer, KeyOffer) else inventory
    return inventory


def _scan(parsed: HostURI, timeout: float | None) -> KeyOffer | HostError:

    try:
        probe(parsed, timeout or settings.KVMWEB_CONNECT_TIMEOUT)
        return KeyOffer(sshkeys.scan(parsed.host, parsed.port, timeout or settings.KVMWEB_CONNECT_TIMEOUT))
    except HostError as e:
        return e
    except sshkeys.SSHKeyError as e:
        # Something other than sshd there, or nothing that answers: the one
        # message for both (libvirt.uri.unreachable_message), the rest to the log.
        log.warning("could not fetch the SSH host key of %s port %s: %s", parsed.host, parsed.port or 22, e.detail)
        return HostUnreachable(unreachable_message(parsed))


def sync_host(host: Host, timeout: float | None = None) -> SyncResult:
    """Read one host's inventory from libvirt and store it."""
    write_known_hosts()
    return store(host, read_host(host, timeout), timeout)


# How long a failed sync_host_evenly takes; None: twice the connect timeout and
# a second. The test suite sets 0 where the point of a test is not the timing.
EVEN_FAILURE_SECONDS: float | None = None


def sync_host_evenly(host: Host) -> SyncResult:
    """sync_host for a person's request (registering a host, its Sync button):
    a host that cannot be read answers only after the longest time any failure
    can take (twice the connect timeout, and a second), so that how long the
    answer took does not tell a closed port (0.01 s) from a filtered one (the
    whole timeout) or from one where something else listens."""
    started = time.monotonic()
    result = sync_host(host)
    if not result.online:
        even = EVEN_FAILURE_SECONDS if EVEN_FAILURE_SECONDS is not None else 2 * settings.KVMWEB_CONNECT_TIMEOUT + 1
        remaining = started + even - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
    return result


def store(host: Host, inventory: Inventory | HostError | KeyOffer, timeout: float | None = None) -> SyncResult:
    """Store what was read. A host that could not be read is marked offline
    with the reason, and what was last known of it is kept, not deleted: an
    administrator at 3 a.m. wants to see which VMs *were* on the host that
    just went away."""
    if isinstance(inventory, KeyOffer):
        trusted = host.offer_host_key(inventory.key)
        host.save(update_fields=Host.SSH_FIELDS)
        if trusted:  # the key pinned at registration, or the trusted one after all
            write_known_hosts()
            inventory = read_inventory(host.uri, timeout)
        else:
            # Not trusted: unconfirmed or changed, so there is a problem to say.
            inventory = host.host_key_problem() or read_inventory(host.uri, timeout)
    if isinstance(inventory, HostError):
        store_unreachable(host, inventory)
        log.warning("sync %s: %s (%s)", host.name, inventory.plain, inventory.detail)
        return SyncResult(host=host.name, online=False, error=inventory.plain)
    return store_inventory(host, inventory)


@transaction.atomic
def store_unreachable(host: Host, error: HostError) -> None:
    was_online = Host.objects.filter(pk=host.pk, status=HostStatus.ONLINE).exists()
    host.mark_unreachable(error)
    host.save(update_fields=["status", "status_reason", "status_detail", "last_sync"])
    if was_online:
        # What it said it runs may no longer be true: the VMs it shared with
        # other hosts are resolved again without it counting as online.
        changed = resolve(lock_domains(Domain.objects.filter(definitions__host=host).values("pk")))
        announce([host.name], changed, host_changed=True)


@transaction.atomic
def store_inventory(host: Host, inventory: Inventory) -> SyncResult:
    if not Host.objects.filter(pk=host.pk, status=HostStatus.ONLINE).exists():
        announce([host.name], Resolution(), host_changed=True)
    host.mark_online(inventory.host)
    # update_fields: a host deleted while its inventory was being read must
    # not be brought back by this save.
    host.save(update_fields=Host.STATUS_FIELDS + Host.LIBVIRT_FACTS)
    _store_pools(host, inventory.pools)
    _store_networks(host, inventory.networks)
    read_at = datetime.fromtimestamp(inventory.read_at, UTC) if inventory.read_at else None
    return _store_domains(host, inventory.domains, read_at)


def _replace_children(
    model: type[M], host: Host, items: Sequence[PoolInfo] | Sequence[NetworkInfo], fields: tuple[str, ...]
) -> None:
    """Upsert a host's pools or networks by name; delete the ones gone."""
    existing = {obj.name: obj for obj in model.objects.filter(host=host)}
    create: list[M] = []
    update: list[M] = []
    for item in items:
        values = {f: getattr(item, f) for f in fields}
        obj = existing.pop(item.name, None)
        if obj is None:
            create.append(model(host=host, name=item.name, **values))
        else:
            for f, v in values.items():
                setattr(obj, f, v)
            update.append(obj)
    model.objects.bulk_create(create)
    if update:
        model.objects.bulk_update(update, fields)
    if existing:
        model.objects.filter(pk__in=[o.pk for o in existing.values()]).delete()


def _store_pools(host: Host, pools: Sequence[PoolInfo]) -> None:
    _replace_children(
        StoragePool,
        host,
        pools,
        ("uuid", "type", "target_path", "capacity", "allocation", "available", "active", "shared", "volumes"),
    )


def _store_networks(host: Host, networks: Sequence[NetworkInfo]) -> None:
    _replace_children(Network, host, networks, ("uuid", "bridge", "forward_mode", "active"))


def _store_domains(host: Host, domains: Iterable[DomainInfo], read_at: datetime | None = None) -> SyncResult:
    """Store this host's definitions, then resolve every VM they concern.

    A definition stored after ``read_at`` (when this read of the host began)
    came from an event of watch_hosts and is newer than what this read saw:
    it is neither overwritten nor deleted (a VM started with virsh while a sync
    was reading must not show shut off again until the next sync). What this
    read stores is stamped with when it began: stamped with when it was
    written, a slow read would pass for newer than a later read of the same
    host that wrote first (two syncs at once: after a migration and the
    periodic one), and that read's word would be left out."""
    now = read_at or timezone.now()
    seen = {uuidlib.UUID(d.uuid): d for d in domains}
    # Gone VMs included: one that comes back keeps its row and its id.
    known = set(Domain.rows.filter(uuid__in=seen.keys()).values_list("uuid", flat=True))
    new = [
        Domain(uuid=uuid, host=host, last_seen=now, **_facts(info)) for uuid, info in seen.items() if uuid not in known
    ]
    # ignore_conflicts: another process may have created the same VM since.
    Domain.objects.bulk_create(new, batch_size=500, ignore_conflicts=True)
    locked = lock_domains(
        Domain.rows.filter(uuid__in=seen.keys()).values("pk"),
        Domain.rows.filter(definitions__host=host).values("pk"),
    )
    by_uuid = {d.uuid: d for d in locked}
    existing = {d.domain_id: d for d in DomainDefinition.objects.filter(host=host)}
    newer = {pk for pk, d in existing.items() if read_at is not None and d.last_seen > read_at}
    create: list[DomainDefinition] = []
    update: list[DomainDefinition] = []
    for uuid, info in seen.items():
        row = existing.pop(by_uuid[uuid].pk, None)
        if row is not None and row.domain_id in newer:
            continue
        row, created, rewritten = _definition(row, host, by_uuid[uuid], _facts(info), now)
        if created:
            create.append(row)
        elif rewritten:
            update.append(row)
    DomainDefinition.objects.bulk_create(create, batch_size=500)
    if update:
        DomainDefinition.objects.bulk_update(update, DEFINITION_FIELDS, batch_size=500)
    gone = [d.pk for pk, d in existing.items() if pk not in newer]
    removed = len(gone)
    if gone:
        DomainDefinition.objects.filter(pk__in=gone).delete()
    # The newer ones keep the time the event saw them: a later read must still compare against it.
    mine = DomainDefinition.objects.filter(host=host).exclude(domain_id__in=newer)
    mine.update(last_seen=now)
    mine.filter(state__in=list(ACTIVITY)).update(last_active=now)
    resolution = resolve(locked, now)
    # A VM seen for the first time is news too, though resolve found nothing to rewrite in it.
    written = {d.pk for d in resolution.changed}
    resolution.changed += [d for d in locked if d.uuid not in known and d.pk not in written]
    announce([host.name], resolution)
    return SyncResult(
        host=host.name,
        online=True,
        domains=len(seen),
        created=len(seen.keys() - known),
        moved=sum(1 for d in resolution.arrived if d.host_id == host.pk),
        removed=removed,
    )


@transaction.atomic
def store_domain(host: Host, uuid: object, info: DomainInfo | None) -> Resolution:
    """One VM's definition on one host as an event showed it (``info`` None:
    no longer defined there), and the VM resolved again."""
    now = timezone.now()
    uuid = uuidlib.UUID(str(uuid))
    if info is not None:
        Domain.objects.bulk_create([Domain(uuid=uuid, host=host, last_seen=now, **_facts(info))], ignore_conflicts=True)
    locked = lock_domains(Domain.rows.filter(uuid=uuid).values("pk"))
    if not locked:
        return Resolution()
    row = DomainDefinition.objects.filter(host=host, domain=locked[0]).first()
    if info is None:
        if row is not None:
            row.delete()
    else:
        values = _facts(info)
        if row is not None:
            values["disks"] = _keep_volume_facts(values["disks"], row.disks)
        row, new, _changed = _definition(row, host, locked[0], values, now)
        row.last_seen = now
        if row.is_active:
            row.last_active = now
        if new:
            row.save()
        else:
            row.save(update_fields=[*DEFINITION_FIELDS, "last_seen", "last_active"])
    changed = resolve(locked, now)
    announce([host.name], changed)
    return changed


def _definition(
    row: DomainDefinition | None, host: Host, domain: Domain, values: dict[str, Any], now: datetime
) -> tuple[DomainDefinition, bool, bool]:
    """``(row, new, changed)``: the definition with these values, not saved."""
    running = ACTIVITY.get(values["state"]) == ACTIVITY[DomainStateChoices.RUNNING]
    if row is None:
        row = DomainDefinition(
            host=host,
            domain=domain,
            last_seen=now,
            last_active=now if values["state"] in ACTIVITY else None,
            running_since=now if running else None,
            **values,
        )
        return row, True, True
    if running and row.running_since is None:
        values["running_since"] = now
    elif not running:
        values["running_since"] = None
    # Most refreshes change nothing: write only the rows that did change.
    changed = any(getattr(row, f) != v for f, v in values.items())
    for f, v in values.items():
        setattr(row, f, v)
    return row, False, changed


def _keep_volume_facts(disks: list[dict[str, Any]], before: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An event's disks carry no pool or sizes: keep what the last full read knew of the same paths."""
    known = {d.get("path"): d for d in before}
    for disk in disks:
        old = known.get(disk.get("path"))
        if old is not None and disk.get("capacity") is None:
            disk.update(capacity=old.get("capacity"), allocation=old.get("allocation"), pool=old.get("pool", ""))
    return disks


def _facts(info: DomainInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "state": info.state,
        "memory": info.memory,
        "max_memory": info.max_memory,
        "hugepage_kib": info.hugepage_kib,
        "vcpus": info.vcpus,
        "persistent": info.persistent,
        "autostart": info.autostart,
        "disks": [asdict(d) for d in info.disks],
        "interfaces": [asdict(i) for i in info.interfaces],
    }


def lock_domains(*pk_queries: QuerySet[Domain, Any]) -> list[Domain]:
    """The Domain rows of these queries, locked for this transaction, always
    in UUID order so that two syncs sharing VMs wait rather than deadlock, and
    each resolves what the other committed."""
    match = Q()
    for query in pk_queries:
        match |= Q(pk__in=query)
    return list(Domain.rows.select_for_update().filter(match).order_by("uuid"))


@dataclass
class Move:
    domain: Domain
    source_id: int
    target: Host
    source: Host | None = None


@dataclass
class Resolution:
    changed: list[Domain] = field(default_factory=list)  # Domain rows written
    removed: list[int] = field(default_factory=list)  # ids of Domains no host defines any more
    arrived: list[Domain] = field(default_factory=list)  # Domains now shown on another host, where they are active
    moved: list[Move] = field(default_factory=list)  # Move: ran on one host, now runs on another

    def __bool__(self) -> bool:
        return bool(self.changed or self.removed)


def choose(definitions: Iterable[DomainDefinition]) -> tuple[DomainDefinition, bool]:
    """Which of a VM's definitions says where it is, and whether it runs on
    several hosts at once: ``(definition, split_brain)``.

    A function of the definitions alone, so the result never depends on the
    order in which hosts were read. The most active definition on a host
    that answers wins; among equals, the newer news wins while it is not
    yet confirmed (a VM just seen running on kvm01 while kvm02's last word,
    older than that, was "running" is a VM that moved), then the definition
    it last ran from, then the persistent one, then the host's name.
    """
    definitions = sorted(definitions, key=lambda d: d.host.name)
    running = [d for d in definitions if d.is_running and d.host.status == HostStatus.ONLINE]
    # Several hosts say "running": a split brain only once each host said so
    # after the other's guest had started, not on one host's stale word.
    confirmed = len(running) > 1 and min(d.last_seen for d in running) >= max(d.running_since or EPOCH for d in running)

    def rank(d: DomainDefinition) -> tuple[int, bool, datetime, datetime, bool]:
        online = d.host.status == HostStatus.ONLINE
        fresh = d.running_since if d in running and not confirmed else None
        # When it last ran there tells apart hosts it does not run on now.
        ran = d.last_active if not d.is_active else None
        return (d.activity, online, fresh or EPOCH, ran or EPOCH, d.persistent)

    return max(definitions, key=rank), confirmed


def resolve(domains: Sequence[Domain], now: datetime | None = None) -> Resolution:
    """Set each Domain's host and facts from all its definitions; mark gone the
    Domains no host defines any more. The rows must be locked by the caller."""
    now = now or timezone.now()
    result = Resolution()
    if not domains:
        return result
    grouped: defaultdict[int, list[DomainDefinition]] = defaultdict(list)
    for d in DomainDefinition.objects.filter(domain__in=domains).select_related("host"):
        grouped[d.domain_id].append(d)
    hosts: dict[int, Host] = {}
    split: list[tuple[Domain, list[str]]] = []
    for domain in domains:
        definitions = grouped.get(domain.pk)
        if not definitions:
            if domain.state != DomainStateChoices.GONE:
                result.removed.append(domain.pk)
            continue
        for d in definitions:
            hosts[d.host_id] = d.host
        chosen, split_brain = choose(definitions)
        values = {f: getattr(chosen, f) for f in DomainDefinition.FACTS}
        values.update(host_id=chosen.host_id, split_brain=split_brain)
        source_id = domain.moved_from_id
        if domain.host_id != chosen.host_id and chosen.is_active and _ran_on(domain, definitions):
            result.arrived.append(domain)
            source_id = domain.host_id
        if source_id is not None:
            settled = _move_settled(source_id, chosen, definitions)
            if settled and not split_brain and source_id != chosen.host_id:
                result.moved.append(Move(domain, source_id, chosen.host))
            values["moved_from_id"] = None if settled or split_brain else source_id
        if split_brain != domain.split_brain:
            split.append((domain, sorted(d.host.name for d in definitions if d.is_running)))
        if any(getattr(domain, f) != v for f, v in values.items()):
            for f, v in values.items():
                setattr(domain, f, v)
            domain.last_seen = now
            result.changed.append(domain)
    if result.changed:
        Domain.rows.bulk_update(result.changed, DOMAIN_FIELDS, batch_size=500)
    if result.removed:
        # Kept as gone, not deleted: a VM between two hosts' reports during a
        # move (or an event's) is defined nowhere for a moment, and must come
        # back as the same row, with the same id.
        Domain.rows.filter(pk__in=result.removed).update(
            state=DomainStateChoices.GONE, split_brain=False, moved_from=None, last_seen=now
        )
    missing = {m.source_id for m in result.moved} - hosts.keys()
    if missing:
        hosts.update(Host.objects.in_bulk(missing))
    for m in result.moved:
        m.source = hosts.get(m.source_id)
    for m in result.moved:
        log.info("domain %s moved from %s to %s", m.domain.name, m.source, m.target)
        signals.domain_moved.send(Domain, domain=m.domain, source=m.source, target=m.target, seen_at=now)
    for domain, running_on in split:
        signals.split_brain_changed.send(Domain, domain=domain, hosts=running_on, seen_at=now)
    return result


def _move_settled(source_id: int, chosen: DomainDefinition, definitions: Iterable[DomainDefinition]) -> bool:
    """Whether the host a VM turned up from has said it no longer runs it (or
    stopped answering, or it went elsewhere again)."""
    if chosen.host_id == source_id:
        return True
    before = next((d for d in definitions if d.host_id == source_id), None)
    return before is None or not before.is_running or before.host.status != HostStatus.ONLINE


def _ran_on(domain: Domain, definitions: Iterable[DomainDefinition]) -> bool:
    """Whether kvmweb ever saw the VM active where it was: a VM first seen
    shut off on one host and running on another, in one round of reads, did
    not move; one that ran there, or whose definition there went away, did."""
    before = next((d for d in definitions if d.host_id == domain.host_id), None)
    return before is None or before.last_active is not None or domain.state in ACTIVITY


def announce(host_names: list[str], resolution: Resolution, host_changed: bool = False) -> None:
    """Once committed, say what changed: these hosts (their status, if
    ``host_changed``) and the VMs the resolution wrote or removed."""
    if not resolution and not host_changed:
        return
    ids = [d.pk for d in resolution.changed] + resolution.removed
    transaction.on_commit(lambda: signals.inventory_changed.send(Domain, hosts=host_names, domains=ids))


def sync_hosts(names: list[str] | None = None, timeout: float | None = None, readers: int = 4) -> list[SyncResult]:
    """Sync several hosts: libvirt is read in parallel, the database written in
    this thread, one transaction per host as each read completes.

    In parallel, one host that does not answer costs its timeout once rather
    than delaying every host after it, and hosts far away overlap their round
    trips. libvirt releases the GIL while it waits or parses.
    """
    hosts = list(Host.objects.all() if not names else Host.objects.filter(name__in=names))
    if not hosts:
        return []
    write_known_hosts()
    results: dict[int, SyncResult] = {}
    with ThreadPoolExecutor(max_workers=min(readers, len(hosts)), thread_name_prefix="sync") as pool:
        futures = {pool.submit(read_host, host, timeout): host for host in hosts}
        for future in as_completed(futures):
            host = futures[future]
            results[host.pk] = store(host, future.result(), timeout)
    return [results[host.pk] for host in hosts]


def sync_all_job() -> list[str]:
    """RQ job: the periodic refresh of every host."""
    results = sync_hosts()
    return [str(r) for r in results]
