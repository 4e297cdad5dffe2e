"""The planner's facts, read from the inventory: hosts, their pools, networks
and VMs, and the capacity model's figures (hosts/capacity.py, the same the
memory check and the claim use): each host's memory capacity and what it has
committed, the guests it runs and those on their way in."""

from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from hosts import capacity
from hosts.models import Domain, Host, StoragePool
from migrations_app.models import Migration, Mode, Status

from . import planner, rules
from .models import Kind

# (host id, pool name, volume name) of a VM's own leftover copies.
Leftovers = frozenset[tuple[int, str, str]]


def hosts() -> dict[int, planner.HostFacts]:
    """HostFacts for every registered host, by id."""
    rows = list(capacity.with_committed(Host.objects.prefetch_related("pools", "networks")))
    names: dict[int, set[str]] = {}
    uuids: dict[int, set[str]] = {}
    for host_id, name, uuid in Domain.objects.values_list("host_id", "name", "uuid"):
        names.setdefault(host_id, set()).add(name)
        uuids.setdefault(host_id, set()).add(str(uuid))
    facts = {}
    for h in rows:
        figures = capacity.of(h)
        facts[h.pk] = planner.HostFacts(
            id=h.pk,
            name=h.name,
            online=h.status == "online",
            maintenance=h.maintenance,
            status=h.get_status_display().lower(),
            cpu_arch=h.cpu_arch,
            cpu_vendor=h.cpu_vendor,
            memory_capacity=figures.memory_capacity,
            memory_committed=figures.memory_committed,
            vcpu_capacity=figures.vcpu_capacity,
            vcpus_committed=figures.vcpus_committed,
            max_incoming=h.max_incoming,
            max_outgoing=h.max_outgoing,
            pools={
                p.name: planner.Pool(
                    p.name,
                    p.target_path,
                    p.available,
                    p.active,
                    p.is_shared,
                    frozenset(v.get("name", "") for v in p.volumes or []),
                )
                for p in h.pools.all()
            },
            bridges=frozenset(n.bridge for n in h.networks.all() if n.bridge and n.active),
            networks=frozenset(n.name for n in h.networks.all() if n.active),
            domain_names=frozenset(names.get(h.pk, ())),
            domain_uuids=frozenset(uuids.get(h.pk, ())),
        )
    return facts


def own_leftovers(domain: Domain) -> Leftovers:
    """(host id, pool, volume name) of the copies earlier moves of this VM
    recorded leaving behind (hosts.volumes, migrations' ``left_on_source``)
    that are still there, in the inventory."""
    return leftovers_by_vm([domain]).get(str(domain.uuid), frozenset())


def leftovers_by_vm(domains: Iterable[Domain]) -> dict[str, Leftovers]:
    """own_leftovers for many VMs at once, by uuid: two queries, not two per VM
    (a plan of 2,000 VMs spent 2 s here asking for each)."""
    left: dict[str, dict[str, int]] = {}  # uuid -> {path: source host id}
    moves = Migration.objects.filter(
        domain_uuid__in=[d.uuid for d in domains], status=Status.SUCCEEDED, storage="copy"
    ).exclude(source=None)
    for uuid, source_id, stats in moves.values_list("domain_uuid", "source_id", "stats"):
        for path in (stats or {}).get("left_on_source") or []:
            left.setdefault(str(uuid), {})[path] = source_id
    if not left:
        return {}
    on_hosts = {host_id for paths in left.values() for host_id in paths.values()}
    volumes: dict[tuple[int, str], tuple[str, str]] = {}  # (host id, path) -> (pool, name)
    for pool in StoragePool.objects.filter(host_id__in=on_hosts):
        for v in pool.volumes or []:
            volumes[(pool.host_id, v.get("path"))] = (pool.name, v.get("name", ""))
    found: dict[str, Leftovers] = {}
    for vm, paths in left.items():  # not ``uuid``: above, that is a UUID
        found[vm] = frozenset(
            (host_id, *volumes[(host_id, path)]) for path, host_id in paths.items() if (host_id, path) in volumes
        )
    return found


def guest(domain: Domain, leftovers: Leftovers | None = None, dirty_rate_bps: float = 0) -> planner.Guest:
    """The planner's view of one VM; ``leftovers``: own_leftovers already read for it (None: read them)."""
    needs = capacity.Guest.of(domain)
    disks = tuple(
        planner.Disk(d.get("path", ""), d.get("pool") or "", d.get("allocation") or d.get("capacity") or 0)
        for d in domain.disks
        if d.get("device") == "disk" and d.get("path")
    )
    return planner.Guest(
        id=domain.pk,
        name=domain.name,
        uuid=str(domain.uuid),
        host_id=domain.host_id,
        state=domain.state,
        # What the capacity model counts: the maximum, not what the balloon shows now.
        memory=needs.max_memory,
        vcpus=needs.vcpus,
        hugepages=bool(needs.hugepage_kib),
        persistent=domain.persistent,
        disks=disks,
        bridges=frozenset(i["bridge"] for i in domain.interfaces if i.get("type") == "bridge" and i.get("bridge")),
        networks=frozenset(i["network"] for i in domain.interfaces if i.get("type") == "network" and i.get("network")),
        own_leftovers=own_leftovers(domain) if leftovers is None else leftovers,
        dirty_rate_bps=dirty_rate_bps,
    )


def guests(queryset: Iterable[Domain], leftovers: bool = True) -> list[planner.Guest]:
    """``leftovers``: read each VM's own leftover copies (all in two queries), which only a return uses."""
    domains = list(queryset)
    found = leftovers_by_vm(domains) if leftovers else {}
    rates = dirty_rates(domains)
    return [guest(d, found.get(str(d.uuid), frozenset()), rates.get(str(d.uuid), 0)) for d in domains]


def dirty_rates(domains: list[Domain]) -> dict[str, float]:
    """Each VM's dirty rate as its newest live migration measured it from pass 2 on
    (measure.history_rate), in one query (of the newest thousand migrations of these VMs)."""
    rates: dict[str, float] = {}
    uuids = [d.uuid for d in domains]
    rows = (
        Migration.objects.filter(domain_uuid__in=uuids, mode=Mode.LIVE, status__in=[Status.SUCCEEDED, Status.FAILED])
        .exclude(stats={})
        .order_by("-finished_at")
        .values_list("domain_uuid", "progress", "stats")[:1000]
    )
    for uuid, progress, stats in rows:
        key = str(uuid)
        if key in rates:
            continue
        later = [bps for it, bps in (progress or {}).get("pass_dirty_rates") or [] if it >= 2]
        value = max(later) if later else (stats or {}).get("dirty_rate_bps") or 0
        if value:
            rates[key] = value
    return rates


def speed_bps() -> float:
    """The sending speed recent live migrations measured (the median), or the planner's default."""
    speeds = sorted(
        s
        for s in Migration.objects.filter(status=Status.SUCCEEDED, mode=Mode.LIVE)
        .exclude(stats={})
        .order_by("-finished_at")
        .values_list("stats__speed_bps", flat=True)[:20]
        if s
    )
    return speeds[len(speeds) // 2] if speeds else planner.DEFAULT_SPEED_BPS


def plan_evacuation(host: Host) -> planner.Plan:
    """Where every VM of ``host`` would go now."""
    placement = rules.enabled()
    return planner.plan(
        guests(Domain.objects.filter(host=host)),
        hosts().values(),
        speed_bps=speed_bps(),
        rules=placement,
        where=rules.where(placement),
    )


def plan_return(items: Iterable[Domain], home: Host) -> planner.Plan:
    """Bring these VMs (Domain rows) back to ``home``, and only there."""
    facts = hosts()
    others = [pk for pk in facts if pk != home.pk]
    placement = rules.enabled()
    return planner.plan(
        guests(items),
        facts.values(),
        exclude=others,
        speed_bps=speed_bps(),
        replace_own_leftovers=True,
        rules=placement,
        where=rules.where(placement),
    )


def cooling_down(seconds: int | None = None) -> frozenset[str]:
    """UUIDs of the VMs a balance plan moved within the cool-down
    (``KVMWEB_BALANCE_COOLDOWN_SECONDS``): balancing leaves them where they are."""
    if seconds is None:
        seconds = settings.KVMWEB_BALANCE_COOLDOWN_SECONDS
    since = timezone.now() - timedelta(seconds=seconds)
    moved = Migration.objects.filter(
        evacuations__kind=Kind.BALANCE, status=Status.SUCCEEDED, finished_at__gte=since
    ).values_list("domain_uuid", flat=True)
    return frozenset(str(u) for u in moved)


def plan_balance(threshold: float | None = None) -> planner.Balance:
    """The moves that would bring the cluster within ``threshold`` points of its mean now."""
    if threshold is None:
        threshold = settings.KVMWEB_BALANCE_THRESHOLD
    facts = hosts()
    weighed = [pk for pk, h in facts.items() if h.online and not h.maintenance]
    placement = rules.enabled()
    return planner.balance(
        guests(Domain.objects.filter(host_id__in=weighed, state__in=planner.LIVE_STATES), leftovers=False),
        facts.values(),
        threshold=threshold,
        rules=placement,
        where=rules.where(placement),
        cooling=cooling_down(),
        speed_bps=speed_bps(),
    )
