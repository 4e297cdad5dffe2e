"""The placement planner: where each VM of a host can go, and in plain words why
(or why it can go nowhere).

Pure code over plain facts: no database, no libvirt. ``maintenance.facts``
reads the facts from the inventory and the capacity model; tests and the
benchmark build them by hand. It asks what the pre-flight checks ask, from
what the inventory already knows: room for the guest's memory in the capacity
model, the same architecture (and CPU vendor, for a live move), the disks on
shared storage both hosts have or a pool on the target with room to copy them
into, the bridges and networks, no VM of that name or UUID on the target, the
target online, not in maintenance and accepting incoming migrations. The
pre-flight checks still run on each migration: what the inventory cannot know
(the guest's CPU model against the target's, that a share is really shared)
is proven there, and a move they refuse is tried once on another target.

Load is spread: each VM goes to the fitting host with the least committed
memory (as a share of its capacity), counting what the plan has already put
there. Large VMs are placed first, so that small ones fill the gaps.

Placement rules (``Rule``: keep VMs apart, keep them together, pin them to
hosts) bind every plan: a host that would break one is refused with the rule's
name, like a host without room. ``balance`` plans the moves that bring every
host's committed share near the cluster's, under the same rules.
"""

import heapq
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NotRequired, TypedDict

from core.formatting import size
from hosts.figures import choose_copy_pool
from migrations_app import prediction

MiB = 1024 * 1024
GiB = 1024 * MiB

LIVE_STATES = frozenset({"running", "blocked", "paused"})
# What a move costs besides sending the bytes: connecting, pre-flight checks,
# defining and starting on the target, the inventory refresh afterwards.
MOVE_OVERHEAD_SECONDS = 4
# Sending speed to assume before any migration has measured one.
DEFAULT_SPEED_BPS = 100 * MiB


@dataclass(frozen=True)
class Pool:
    name: str
    path: str
    available: int
    active: bool = True
    shared: bool = False
    # The names of the volumes in it (a copy of a disk named like one clashes).
    volumes: frozenset[str] = frozenset()


APART, TOGETHER, PINNED = "apart", "together", "pinned"


@dataclass(frozen=True)
class Rule:
    """A placement rule as plain data: ``vms`` by UUID, ``hosts`` by id (pinned only)."""

    name: str
    kind: str  # APART, TOGETHER or PINNED
    vms: frozenset[str] = frozenset()
    hosts: frozenset[int] = frozenset()


@dataclass
class HostFacts:
    id: int
    name: str
    online: bool = True
    maintenance: bool = False
    status: str = "online"  # the words for a host that is not online
    cpu_arch: str = "x86_64"
    cpu_vendor: str = "Intel"
    memory_capacity: int = 0  # bytes the capacity model lets guests have
    memory_committed: int = 0  # bytes already promised to guests
    max_incoming: int = 2
    max_outgoing: int = 2
    pools: dict[str, Pool] = field(default_factory=dict)  # name -> Pool
    bridges: frozenset[str] = frozenset()  # bridges its libvirt networks use
    networks: frozenset[str] = frozenset()  # its active libvirt networks
    domain_names: frozenset[str] = frozenset()
    domain_uuids: frozenset[str] = frozenset()
    vcpu_capacity: int = 0  # vCPUs it may run (capacity model); 0: not known, not weighed
    vcpus_committed: int = 0


@dataclass(frozen=True)
class Disk:
    path: str
    pool: str  # "" when it is in no pool kvmweb knows
    size: int  # bytes a copy has to move


@dataclass(frozen=True)
class Guest:
    id: int
    name: str
    uuid: str
    host_id: int  # where it is now
    state: str
    memory: int  # bytes, as the capacity model counts the guest
    persistent: bool = True
    vcpus: int = 1
    # Backed by huge pages: the capacity model counts it in the target's huge
    # page pool, which the pre-flight check weighs, not in committed memory.
    hugepages: bool = False
    disks: tuple[Disk, ...] = ()
    bridges: frozenset[str] = frozenset()
    networks: frozenset[str] = frozenset()
    # (host id, pool name, volume name) of copies an earlier move of this VM
    # recorded leaving behind: provably its own, so its return may remove them.
    own_leftovers: frozenset[tuple[int, str, str]] = frozenset()
    # Bytes a second it dirties, as its earlier migrations measured (0: not known, taken as idle).
    dirty_rate_bps: float = 0

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


class Move(TypedDict):
    """One move of a plan, as the API, the pages and an evacuation's items carry it."""

    domain: int
    domain_name: str
    domain_uuid: str
    source: int
    source_name: str
    target: int
    target_name: str
    mode: str  # "live" or "cold"
    storage: str  # "shared" or "copy"
    target_pool: str
    memory: int
    predicted_seconds: int
    why: str
    # Only on a return that removes the VM's own leftover copy first.
    replace_own_leftovers: NotRequired[bool]


class Left(TypedDict):
    """A VM a plan leaves where it is, and why."""

    domain: int
    domain_name: str
    reason: str


class PlanDict(TypedDict):
    plan: list[Move]
    unplaced: list[Left]
    staying: list[Left]
    predicted_seconds: int


@dataclass
class Plan:
    moves: list[Move] = field(default_factory=list)
    unplaced: list[Left] = field(default_factory=list)  # running VMs that fit nowhere
    staying: list[Left] = field(default_factory=list)  # VMs that do not run and cannot move: they stay
    predicted_seconds: int = 0  # all moves, as many at once as the hosts' limits allow

    def as_dict(self) -> PlanDict:
        return {
            "plan": self.moves,
            "unplaced": self.unplaced,
            "staying": self.staying,
            "predicted_seconds": self.predicted_seconds,
        }


# {uuid: (host id, name)} of VMs the rules name.
Where = Mapping[str, tuple[int, str]]


def plan(
    guests: Sequence[Guest],
    hosts: Iterable[HostFacts],
    exclude: Collection[int] = (),
    speed_bps: float = DEFAULT_SPEED_BPS,
    replace_own_leftovers: bool = False,
    rules: Iterable[Rule] = (),
    where: Where | None = None,
) -> Plan:
    """Place every guest on one of ``hosts`` (HostFacts, the guests' own hosts
    among them), never on a host in ``exclude`` nor where it is now, nor where
    it would break one of ``rules``.

    ``where``: {uuid: (host id, name)} of the other VMs the rules name (the
    ones that do not move), so that a rule can say where they are.

    A copy never goes into a pool holding a volume named like one of its disks
    without the plan saying so: another pool is chosen, or with
    ``replace_own_leftovers`` (a return) the guest's own leftover is removed
    first, or the host is refused naming the volume."""
    by_id = {h.id: h for h in hosts}
    committed = {h.id: h.memory_committed for h in hosts}
    copy_room: dict[tuple[int, str], int] = {}  # (host id, pool name) -> bytes the plan has already copied there
    result = Plan()
    closed = {h.id: _closed(h) for h in hosts if h.id not in exclude}
    order = sorted(guests, key=lambda g: (not g.live, -g.memory, g.name))
    places = Places(rules, where, guests, by_id)
    for guest in order:
        source = by_id[guest.host_id]
        if not guest.live and not guest.persistent:
            result.staying.append(_left(guest, "It is not running and has no saved definition: nothing to move."))
            places.settle(guest.uuid)
            continue
        if not guest.live and guest.state != "shutoff":
            result.staying.append(
                _left(guest, f"It is {guest.state}: kvmweb moves running VMs live and shut-off ones cold only.")
            )
            places.settle(guest.uuid)
            continue
        refusals: dict[str, str] = {}
        candidates = sorted(
            (h for h in hosts if h.id in closed and h.id != source.id),
            key=lambda h: (_share(committed[h.id], h.memory_capacity), h.name),
        )
        for host in candidates:
            why_not = (
                closed[host.id] or _refusal(guest, source, host, committed[host.id]) or places.refusal(guest, host)
            )
            if why_not:
                refusals[host.name] = why_not
                continue
            storage = _storage(guest, source, host, copy_room, replace_own_leftovers)
            if isinstance(storage, str):
                refusals[host.name] = storage
                continue
            mode, pool, copied, leftovers, replace = storage
            if guest.live and not guest.hugepages:
                committed[host.id] += guest.memory
            if copied:
                copy_room[host.id, pool] = copy_room.get((host.id, pool), 0) + copied
            move = _move(guest, source, host, mode, pool, copied, committed[host.id], speed_bps)
            if leftovers:
                move["why"] += " " + leftovers
            if replace:
                move["replace_own_leftovers"] = True
            kept = places.obeyed(guest)
            if kept:
                move["why"] += " " + kept
            result.moves.append(move)
            places.settle(guest.uuid, host.id)
            break
        else:
            places.settle(guest.uuid)
            reason = _nowhere(refusals)
            if guest.live:
                result.unplaced.append(_left(guest, reason))
            else:
                result.staying.append(_left(guest, f"It is shut off and stays on {source.name}: {reason}"))
    result.predicted_seconds = schedule(result.moves, by_id)
    return result


class Places:
    """Where every VM the rules name is, as the plan goes: the rules' half of the planner.

    A VM of the plan not yet placed is *pending*: a ``together`` rule does not
    hold it against a host (it will follow), while an ``apart`` rule counts it
    where it is now (the host it leaves is no candidate anyway)."""

    def __init__(
        self, rules: Iterable[Rule], where: Where | None, guests: Iterable[Guest], hosts: Mapping[int, HostFacts]
    ) -> None:
        self.hosts = hosts
        self.by_vm: dict[str, list[Rule]] = {}
        for rule in rules:
            for uuid in rule.vms:
                self.by_vm.setdefault(uuid, []).append(rule)
        self.position = {uuid: host_id for uuid, (host_id, _) in (where or {}).items()}
        self.names = {uuid: name for uuid, (_, name) in (where or {}).items()}
        for g in guests:
            self.position[g.uuid] = g.host_id
            self.names[g.uuid] = g.name
        self.pending = {g.uuid for g in guests}

    def settle(self, uuid: str, host_id: int | None = None) -> None:
        """The plan has decided about this VM: it goes to ``host_id``, or stays (None)."""
        self.pending.discard(uuid)
        if host_id is not None:
            self.position[uuid] = host_id

    def refusal(self, guest: Guest, host: HostFacts) -> str:
        """Why a rule keeps ``guest`` off ``host``, naming the rule; or ""."""
        for rule in self.by_vm.get(guest.uuid, ()):
            why = self._breaks(rule, guest, host)
            if why:
                return f"rule {rule.name} {why}"
        return ""

    def _breaks(self, rule: Rule, guest: Guest, host: HostFacts) -> str:
        others = sorted(u for u in rule.vms if u != guest.uuid and u in self.position)
        if rule.kind == PINNED:
            if host.id not in rule.hosts:
                allowed = sorted(self.hosts[h].name for h in rule.hosts if h in self.hosts)
                return f"pins {guest.name} to {', '.join(allowed) or 'hosts kvmweb no longer has'}"
        elif rule.kind == APART:
            near = [self.names[u] for u in others if self.position[u] == host.id]
            if near:
                return f"keeps {guest.name} apart from {', '.join(near)}, which {_is(near)} on {host.name}"
        elif rule.kind == TOGETHER:
            away = [
                u
                for u in others
                if u not in self.pending and self.position[u] != host.id and not self._leaving(self.position[u])
            ]
            if away:
                there = self.hosts.get(self.position[away[0]])
                return (
                    f"keeps {guest.name} together with {', '.join(self.names[u] for u in away)}, which "
                    f"{_is(away)} on {there.name if there else 'another host'}"
                )
        return ""

    def _leaving(self, host_id: int) -> bool:
        """A VM on a host in maintenance is on its way off it: it does not hold the others
        of its group there (a move tried again mid-evacuation may go where the first went)."""
        host = self.hosts.get(host_id)
        return bool(host and host.maintenance)

    def obeyed(self, guest: Guest) -> str:
        """The rules a move of ``guest`` obeys, in a sentence for its ``why``; or ""."""
        names = sorted(r.name for r in self.by_vm.get(guest.uuid, ()))
        if not names:
            return ""
        return f"It obeys placement rule{'s' if len(names) > 1 else ''} {', '.join(names)}."


def _is(items: Sequence[str]) -> str:
    return "are" if len(items) > 1 else "is"


def rule_refusal(
    rules: Iterable[Rule], uuid: str, name: str, target: HostFacts, where: Where, hosts: Mapping[int, HostFacts]
) -> str:
    """For the pre-flight check of one manual move: why moving VM ``uuid`` to
    HostFacts ``target`` breaks one of ``rules``, naming the rule; or "".
    ``where``: {uuid: (host id, name)} of every VM the rules name;
    ``hosts``: {id: HostFacts} for their names."""
    source = where.get(uuid, (None, name))[0]
    guest = Guest(id=0, name=name, uuid=uuid, host_id=source if source is not None else -1, state="running", memory=0)
    places = Places(rules, where, [], hosts)
    places.names[uuid] = name
    places.position.pop(uuid, None)
    return places.refusal(guest, target)


def _share(committed: int, capacity: int) -> float:
    return committed / capacity if capacity > 0 else float("inf")


def _closed(host: HostFacts) -> str:
    """Why no VM may go to this host at all, or ""."""
    if host.maintenance:
        return "it is in maintenance"
    if not host.online:
        return f"it is {host.status}"
    if host.max_incoming < 1:
        return "it accepts no incoming migrations (its limit is 0)"
    return ""


def _refusal(guest: Guest, source: HostFacts, host: HostFacts, committed: int) -> str:
    """Why this guest cannot go to this host, or ""; storage aside."""
    if guest.uuid in host.domain_uuids:
        return f"it already has a definition of {guest.name} (same UUID)"
    if guest.name in host.domain_names:
        return f"it already has a VM named {guest.name}"
    if source.cpu_arch and host.cpu_arch and source.cpu_arch != host.cpu_arch:
        return f"it is an {host.cpu_arch} host and {guest.name} runs on {source.cpu_arch}"
    if guest.live and source.cpu_vendor and host.cpu_vendor and source.cpu_vendor != host.cpu_vendor:
        return f"its CPUs are {host.cpu_vendor}, not {source.cpu_vendor}: a live move could crash the guest"
    missing = [f"bridge {b}" for b in sorted(guest.bridges) if b in source.bridges and b not in host.bridges]
    missing += [f"network {n}" for n in sorted(guest.networks) if n not in host.networks]
    if missing:
        return f"it has no {', '.join(missing)}"
    if guest.live and not guest.hugepages and committed + guest.memory > host.memory_capacity:
        room = max(0, host.memory_capacity - committed)
        return f"it has {size(room)} of memory room and {guest.name} needs {size(guest.memory)}"
    return ""


# (mode, target pool, bytes to copy, what it says of leftovers, whether its own leftover is removed first)
Storage = tuple[str, str, int, str, bool]


def _storage(
    guest: Guest,
    source: HostFacts,
    host: HostFacts,
    copy_room: Mapping[tuple[int, str], int],
    replace_own_leftovers: bool = False,
) -> Storage | str:
    """(mode, target pool, bytes to copy, what it says of leftovers in the way,
    whether its own leftover is removed first) for moving ``guest`` to ``host``,
    or why not."""
    mode = "live" if guest.live else "cold"
    if not guest.disks:
        return mode, "", 0, "", False
    if all(_shared_with(d, source, host) for d in guest.disks):
        return mode, "", 0, "", False
    if not guest.live:
        unshared = next(d for d in guest.disks if not _shared_with(d, source, host))
        return f"{unshared.path} is not on storage it shares, and a shut-off VM only moves its definition"
    need = sum(d.size for d in guest.disks)
    first = next((d.pool for d in guest.disks if d.pool), "")
    free = {p.name: p.available - copy_room.get((host.id, p.name), 0) for p in host.pools.values() if p.active}
    names = {d.path.rsplit("/", 1)[-1] for d in guest.disks}
    clashes = {p.name: sorted(names & p.volumes) for p in host.pools.values() if names & p.volumes}
    pool = choose_copy_pool(free, need, first)
    if pool is None:
        best = max(free.values(), default=0)
        return f"no storage pool of it has room to copy {size(need)} of disks into (at most {size(max(best, 0))} free)"
    if pool not in clashes:
        return mode, pool, need, "", False
    names_there = ", ".join(clashes[pool])
    own = {v for h, p, v in guest.own_leftovers if h == host.id and p == pool}
    if replace_own_leftovers and set(clashes[pool]) <= own:
        return (
            mode,
            pool,
            need,
            f"Its own leftover {names_there} in pool {pool} (left by an earlier move of {guest.name}) is "
            "removed first.",
            True,
        )
    other = choose_copy_pool({n: room for n, room in free.items() if n not in clashes}, need, first)
    if other is not None:
        return (
            mode,
            other,
            need,
            f"Pool {pool} there already holds {names_there} (a leftover copy: remove it on {host.name}'s page), "
            f"so the disks go into pool {other}.",
            False,
        )
    return (
        f"its pool {pool} already holds a volume named {names_there} (a leftover copy: remove it on {host.name}'s "
        "page) and no other pool has room"
    )


def _shared_with(disk: Disk, source: HostFacts, host: HostFacts) -> bool:
    here = source.pools.get(disk.pool)
    there = host.pools.get(disk.pool)
    return bool(here and there and here.shared and there.shared and there.active and here.path == there.path)


def move_seconds(guest: Guest, copied: int, speed_bps: float) -> float:
    """A move's predicted seconds: the overhead, the copied disks, and for a
    running VM its memory as the pre-flight prediction sees it (passes over
    what it dirties; post-copy, as Automatic would choose, where pre-copy
    would not converge)."""
    seconds = MOVE_OVERHEAD_SECONDS + copied / speed_bps
    if guest.live:
        memory = prediction.predict(guest.memory, guest.dirty_rate_bps, speed_bps, 300, setup_seconds=0)
        if not memory.converges:
            memory = prediction.predict_postcopy(guest.memory, guest.dirty_rate_bps, speed_bps, setup_seconds=0)
        seconds += memory.seconds
    return seconds


def _move(
    guest: Guest,
    source: HostFacts,
    host: HostFacts,
    mode: str,
    pool: str,
    copied: int,
    committed: int,
    speed_bps: float,
) -> Move:
    seconds = move_seconds(guest, copied, speed_bps)
    storage = "copy" if copied else "shared"
    how = (
        f"its disks ({size(copied)}) are copied into pool {pool}"
        if copied
        else "its disks stay where they are (shared storage)"
        if guest.disks
        else "it has no disks to move"
    )
    fill = f"{size(committed)} of {size(host.memory_capacity)} committed with it"
    return {
        "domain": guest.id,
        "domain_name": guest.name,
        "domain_uuid": guest.uuid,
        "source": source.id,
        "source_name": source.name,
        "target": host.id,
        "target_name": host.name,
        "mode": mode,
        "storage": storage,
        "target_pool": pool,
        "memory": guest.memory,
        "predicted_seconds": max(1, round(seconds)),
        "why": (
            f"{host.name} has the least committed memory of the hosts that fit ({fill}); {how}."
            if guest.live
            else f"{guest.name} is shut off: its definition moves to {host.name}; {how}."
        ),
    }


def _left(guest: Guest, reason: str) -> Left:
    return {"domain": guest.id, "domain_name": guest.name, "reason": reason}


def _nowhere(refusals: Mapping[str, str]) -> str:
    """One sentence for all the hosts that refused, hosts with the same reason together."""
    if not refusals:
        return "there is no other host to move it to."
    by_reason: dict[str, list[str]] = {}
    for name, why in sorted(refusals.items()):
        by_reason.setdefault(why, []).append(name)
    parts = []
    for why, names in sorted(by_reason.items(), key=lambda item: item[1][0]):
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        parts.append(f"{shown}: {why}")
    return "it fits on no other host: " + "; ".join(parts) + "."


def schedule(moves: Iterable[Move], hosts: Mapping[int, HostFacts]) -> int:
    """Seconds until every move is done, starting each as soon as its source
    has an outgoing slot and its target an incoming one, in plan order."""
    out_free = {h.id: max(1, h.max_outgoing) for h in hosts.values()}
    in_free = {h.id: max(1, h.max_incoming) for h in hosts.values()}
    queues: dict[int, list[Move]] = {}
    for move in moves:
        queues.setdefault(move["source"], []).append(move)
    running: list[tuple[float, int, Move]] = []  # heap of (end time, order, move)
    now, order = 0.0, 0
    while True:
        for source, queue in queues.items():
            i = 0
            while out_free[source] and i < len(queue):
                move = queue[i]
                if not in_free[move["target"]]:
                    i += 1
                    continue
                out_free[source] -= 1
                in_free[move["target"]] -= 1
                order += 1
                heapq.heappush(running, (now + move["predicted_seconds"], order, move))
                queue.pop(i)
        if not running:
            return round(now)
        now, _, move = heapq.heappop(running)
        out_free[move["source"]] += 1
        in_free[move["target"]] += 1


# -- balancing -----------------------------------------------------------------


class Mean(TypedDict, total=False):
    """The cluster's committed shares in percent (empty when no host is weighed)."""

    memory: float
    vcpus: float | None  # None: no host's vCPU capacity is known


class SpreadRow(TypedDict):
    host: int
    host_name: str
    memory_percent: float
    vcpu_percent: float | None
    within: bool


class Spread(TypedDict, total=False):
    """How far the weighed hosts are from the mean (empty when no host is weighed)."""

    hosts: list[SpreadRow]
    memory_max_deviation: float
    vcpu_max_deviation: float
    outside: list[str]  # names of the hosts outside the band


class BalanceDict(TypedDict):
    plan: list[Move]
    predicted_seconds: int
    threshold: float
    mean: Mean
    before: Spread
    after: Spread
    balanced: bool
    cooling_down: list[Left]
    memory_moved: int


@dataclass
class Balance:
    moves: list[Move] = field(default_factory=list)
    predicted_seconds: int = 0
    threshold: float = 10.0  # percentage points either side of the mean
    mean: Mean = field(default_factory=Mean)  # {"memory": percent, "vcpus": percent or None}
    before: Spread = field(default_factory=Spread)
    after: Spread = field(default_factory=Spread)
    balanced: bool = True  # every host within the threshold once the moves are done
    cooling_down: list[Left] = field(default_factory=list)  # VMs moved by balancing lately: not moved again yet
    memory_moved: int = 0

    def as_dict(self) -> BalanceDict:
        return {
            "plan": self.moves,
            "predicted_seconds": self.predicted_seconds,
            "threshold": self.threshold,
            "mean": self.mean,
            "before": self.before,
            "after": self.after,
            "balanced": self.balanced,
            "cooling_down": self.cooling_down,
            "memory_moved": self.memory_moved,
        }


# Shares a float sum may miss by: a host exactly on the band's edge is within it.
EPSILON = 1e-9


class _Load:
    """Committed memory and vCPUs of the hosts balancing weighs, and how far each is out of the band."""

    def __init__(self, hosts: Sequence[HostFacts], threshold: float) -> None:
        self.hosts = hosts
        self.memory = {h.id: h.memory_committed for h in hosts}
        self.vcpus = {h.id: h.vcpus_committed for h in hosts}
        self.threshold = threshold / 100
        # The mean is the cluster's own share (all committed over all capacity):
        # moves do not change it, so every move aims at the same band.
        self.memory_mean = sum(self.memory.values()) / sum(h.memory_capacity for h in hosts)
        counted = [h for h in hosts if h.vcpu_capacity > 0]
        self.vcpu_mean = (
            sum(self.vcpus[h.id] for h in counted) / sum(h.vcpu_capacity for h in counted) if counted else None
        )

    def excess(self, host: HostFacts, memory: int = 0, vcpus: int = 0) -> float:
        """How far (in shares) ``host`` is outside the band, with ``memory`` and ``vcpus`` more (or less)."""
        # Called some hundred thousand times for a large plan: kept to plain arithmetic.
        out = abs((self.memory[host.id] + memory) / host.memory_capacity - self.memory_mean) - self.threshold
        if out < 0:
            out = 0.0
        if self.vcpu_mean is not None and host.vcpu_capacity > 0:
            cpu = abs((self.vcpus[host.id] + vcpus) / host.vcpu_capacity - self.vcpu_mean) - self.threshold
            if cpu > 0:
                out += cpu
        return out

    def below(self, host: HostFacts) -> bool:
        """Whether the host is below the mean, by memory or by vCPUs."""
        if self.memory[host.id] / host.memory_capacity < self.memory_mean:
            return True
        return bool(
            self.vcpu_mean is not None
            and host.vcpu_capacity
            and self.vcpus[host.id] / host.vcpu_capacity < self.vcpu_mean
        )

    def over(self, host: HostFacts) -> bool:
        """Whether the host is above the mean (by memory, else by vCPUs)."""
        memory = self.memory[host.id] / host.memory_capacity - self.memory_mean
        if abs(memory) > self.threshold or self.vcpu_mean is None or not host.vcpu_capacity:
            return memory > 0
        return self.vcpus[host.id] / host.vcpu_capacity > self.vcpu_mean

    def spread(self) -> Spread:
        rows: list[SpreadRow] = []
        for h in sorted(self.hosts, key=lambda h: h.name):
            memory = 100 * self.memory[h.id] / h.memory_capacity
            vcpus = 100 * self.vcpus[h.id] / h.vcpu_capacity if h.vcpu_capacity else None
            rows.append(
                {
                    "host": h.id,
                    "host_name": h.name,
                    "memory_percent": round(memory, 1),
                    "vcpu_percent": None if vcpus is None else round(vcpus, 1),
                    "within": self.excess(h) <= EPSILON,
                }
            )
        memory_off = max((abs(r["memory_percent"] - 100 * self.memory_mean) for r in rows), default=0)
        vcpu_rows = [r["vcpu_percent"] for r in rows if r["vcpu_percent"] is not None]
        vcpu_off = max((abs(v - 100 * self.vcpu_mean) for v in vcpu_rows), default=0) if self.vcpu_mean else 0
        return {
            "hosts": rows,
            "memory_max_deviation": round(memory_off, 1),
            "vcpu_max_deviation": round(vcpu_off, 1),
            "outside": [r["host_name"] for r in rows if not r["within"]],
        }


def balance(
    guests: Sequence[Guest],
    hosts: Iterable[HostFacts],
    threshold: float = 10,
    rules: Iterable[Rule] = (),
    where: Where | None = None,
    cooling: Collection[str] = frozenset(),
    speed_bps: float = DEFAULT_SPEED_BPS,
) -> Balance:
    """The moves that bring every weighed host's committed memory share (and
    vCPU share) within ``threshold`` percentage points of the cluster's.

    ``hosts``: HostFacts of every host; only online ones, not in maintenance,
    with a memory capacity, are weighed and receive VMs. ``guests``: the VMs on
    them; only running ones move (a shut-off VM commits nothing). ``cooling``:
    UUIDs of VMs balancing moved lately, left where they are.

    Greedy, one move at a time: the host furthest outside the band gives (or,
    when it is below, receives) the VM whose move takes the most out of the
    band across the cluster; between equal ones the smaller VM, so the plan is
    short and moves little memory. A VM moves at most once in a plan, so
    nothing goes back and forth."""
    weighed = [h for h in hosts if h.online and not h.maintenance and h.memory_capacity > 0]
    by_id = {h.id: h for h in hosts}
    result = Balance(threshold=threshold)
    if not weighed:
        result.balanced = False
        return result
    load = _Load(weighed, threshold)
    result.mean = {
        "memory": round(100 * load.memory_mean, 1),
        "vcpus": None if load.vcpu_mean is None else round(100 * load.vcpu_mean, 1),
    }
    result.before = load.spread()
    ids = {h.id for h in weighed}
    places = Places(rules, where, guests, by_id)
    copy_room: dict[tuple[int, str], int] = {}
    movable: dict[int, list[Guest]] = {}
    for g in sorted(guests, key=lambda g: g.name):
        if g.host_id not in ids or not g.live:
            continue
        if g.uuid in cooling:
            result.cooling_down.append(_left(g, "Balancing moved it within the cool-down: it stays where it is."))
            continue
        movable.setdefault(g.host_id, []).append(g)
    places.pending = set()  # a balancing move never waits for another VM to follow
    stuck: set[int] = set()  # hosts outside the band that no move helps
    while True:
        outside = [h for h in weighed if h.id not in stuck and load.excess(h) > EPSILON]
        if not outside:
            break
        worst = max(outside, key=lambda h: (load.excess(h), h.name))
        others = [h for h in weighed if h.id != worst.id]
        if load.over(worst):
            # Hosts below the mean first (there is one whenever a host is above it): far
            # fewer to weigh; the others only when none of those can take a VM.
            below = [t for t in others if load.below(t)]
            move = _best_move([worst], below, movable, load, by_id, places, copy_room, speed_bps)
            if move is None and len(below) < len(others):
                move = _best_move([worst], others, movable, load, by_id, places, copy_room, speed_bps)
        else:
            givers = [h for h in others if load.over(h)]
            move = _best_move(givers, [worst], movable, load, by_id, places, copy_room, speed_bps)
        if move is None:
            stuck.add(worst.id)
            continue
        guest, target, chosen = move  # its own name: mypy keeps one type per variable
        result.moves.append(chosen)
        result.memory_moved += guest.memory
        movable[guest.host_id].remove(guest)
        places.settle(guest.uuid, target.id)
        stuck.clear()  # a move changes what may help elsewhere
    result.after = load.spread()
    result.balanced = not result.after["outside"]
    result.predicted_seconds = schedule(result.moves, by_id)
    return result


def _best_move(
    sources: Sequence[HostFacts],
    targets: Sequence[HostFacts],
    movable: Mapping[int, Sequence[Guest]],
    load: _Load,
    hosts: Mapping[int, HostFacts],
    places: Places,
    copy_room: dict[tuple[int, str], int],
    speed_bps: float,
) -> tuple[Guest, HostFacts, Move] | None:
    """The move of a VM of ``sources`` to one of ``targets`` that takes the most
    out of the band, and is allowed; or None when none takes anything out.

    VMs of one size on one host weigh the same: each size is weighed once, and
    its VMs are tried by name."""
    scored: list[tuple[float, int, str, str, list[Guest], HostFacts, HostFacts]] = []
    after = {t.id: load.excess(t) for t in targets}
    for source in sources:
        sizes: dict[tuple[int, bool, int], list[Guest]] = {}
        for g in movable.get(source.id, ()):
            sizes.setdefault((g.memory, g.hugepages, g.vcpus), []).append(g)
        excess = load.excess(source)
        for (size_, hugepages, vcpus), members in sizes.items():
            memory = 0 if hugepages else size_
            gain_here = excess - load.excess(source, -memory, -vcpus)
            for target in targets:
                if target.id == source.id:
                    continue
                gain = gain_here + after[target.id] - load.excess(target, memory, vcpus)
                if gain > EPSILON:
                    scored.append((-round(gain, 9), size_, members[0].name, target.name, members, source, target))
    scored.sort(key=lambda s: s[:4])
    for *_, members, source, target in scored:
        for guest in members:
            move = _try_move(guest, source, target, load, places, copy_room, speed_bps)
            if move is not None:
                return guest, target, move
    return None


def _try_move(
    guest: Guest,
    source: HostFacts,
    target: HostFacts,
    load: _Load,
    places: Places,
    copy_room: dict[tuple[int, str], int],
    speed_bps: float,
) -> Move | None:
    """The move of ``guest`` to ``target``, counted in ``load``; or None when it is not allowed."""
    if _closed(target) or _refusal(guest, source, target, load.memory[target.id]):
        return None
    if target.vcpu_capacity and load.vcpus[target.id] + guest.vcpus > target.vcpu_capacity:
        return None  # balancing never promises more vCPUs than a host may run
    if places.refusal(guest, target):
        return None
    storage = _storage(guest, source, target, copy_room)
    if isinstance(storage, str):
        return None
    mode, pool, copied, leftovers, _ = storage
    memory = 0 if guest.hugepages else guest.memory
    before = _percent(load, source), _percent(load, target)
    load.memory[source.id] -= memory
    load.memory[target.id] += memory
    load.vcpus[source.id] -= guest.vcpus
    load.vcpus[target.id] += guest.vcpus
    if copied:
        copy_room[target.id, pool] = copy_room.get((target.id, pool), 0) + copied
    move = _move(guest, source, target, mode, pool, copied, load.memory[target.id], speed_bps)
    how = move["why"].split("; ", 1)[1] if "; " in move["why"] else ""
    move["why"] = (
        f"{source.name} has {before[0]} % of its memory committed and {target.name} {before[1]} %, against a "
        f"mean of {round(100 * load.memory_mean)} % (±{round(100 * load.threshold)} points); moving "
        f"{guest.name} ({size(guest.memory)}, {guest.vcpus} vCPU{'s' if guest.vcpus != 1 else ''}) makes them "
        f"{_percent(load, source)} % and {_percent(load, target)} %; {how}"
    ).rstrip()
    if leftovers:
        move["why"] += " " + leftovers
    kept = places.obeyed(guest)
    if kept:
        move["why"] += " " + kept
    return move


def _percent(load: _Load, host: HostFacts) -> int:
    return round(100 * load.memory[host.id] / host.memory_capacity)
