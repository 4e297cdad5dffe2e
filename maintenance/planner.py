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
"""

import heapq
from dataclasses import dataclass, field

from hosts.capacity import choose_copy_pool
from kvmweb.formatting import size

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
    volumes: frozenset = frozenset()


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
    pools: dict = field(default_factory=dict)  # name -> Pool
    bridges: frozenset = frozenset()  # bridges its libvirt networks use
    networks: frozenset = frozenset()  # its active libvirt networks
    domain_names: frozenset = frozenset()
    domain_uuids: frozenset = frozenset()


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
    # Backed by huge pages: the capacity model counts it in the target's huge
    # page pool, which the pre-flight check weighs, not in committed memory.
    hugepages: bool = False
    disks: tuple = ()
    bridges: frozenset = frozenset()
    networks: frozenset = frozenset()
    # (host id, pool name, volume name) of copies an earlier move of this VM
    # recorded leaving behind: provably its own, so its return may remove them.
    own_leftovers: frozenset = frozenset()

    @property
    def live(self):
        return self.state in LIVE_STATES


@dataclass
class Plan:
    moves: list = field(default_factory=list)
    unplaced: list = field(default_factory=list)  # running VMs that fit nowhere
    staying: list = field(default_factory=list)  # VMs that do not run and cannot move: they stay
    predicted_seconds: int = 0  # all moves, as many at once as the hosts' limits allow

    def as_dict(self):
        return {
            "plan": self.moves,
            "unplaced": self.unplaced,
            "staying": self.staying,
            "predicted_seconds": self.predicted_seconds,
        }


def plan(guests, hosts, exclude=(), speed_bps=DEFAULT_SPEED_BPS, replace_own_leftovers=False):
    """Place every guest on one of ``hosts`` (HostFacts, the guests' own hosts
    among them), never on a host in ``exclude`` nor where it is now.

    A copy never goes into a pool holding a volume named like one of its disks
    without the plan saying so: another pool is chosen, or with
    ``replace_own_leftovers`` (a return) the guest's own leftover is removed
    first, or the host is refused naming the volume."""
    by_id = {h.id: h for h in hosts}
    committed = {h.id: h.memory_committed for h in hosts}
    copy_room = {}  # (host id, pool name) -> bytes the plan has already copied there
    result = Plan()
    closed = {h.id: _closed(h) for h in hosts if h.id not in exclude}
    order = sorted(guests, key=lambda g: (not g.live, -g.memory, g.name))
    for guest in order:
        source = by_id[guest.host_id]
        if not guest.live and not guest.persistent:
            result.staying.append(_left(guest, "It is not running and has no saved definition: nothing to move."))
            continue
        if not guest.live and guest.state != "shutoff":
            result.staying.append(
                _left(guest, f"It is {guest.state}: kvmweb moves running VMs live and shut-off ones cold only.")
            )
            continue
        refusals = {}
        candidates = sorted(
            (h for h in hosts if h.id in closed and h.id != source.id),
            key=lambda h: (_share(committed[h.id], h.memory_capacity), h.name),
        )
        for host in candidates:
            why_not = closed[host.id] or _refusal(guest, source, host, committed[host.id])
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
            result.moves.append(move)
            break
        else:
            reason = _nowhere(refusals)
            if guest.live:
                result.unplaced.append(_left(guest, reason))
            else:
                result.staying.append(_left(guest, f"It is shut off and stays on {source.name}: {reason}"))
    result.predicted_seconds = schedule(result.moves, by_id)
    return result


def _share(committed, capacity):
    return committed / capacity if capacity > 0 else float("inf")


def _closed(host):
    """Why no VM may go to this host at all, or ""."""
    if host.maintenance:
        return "it is in maintenance"
    if not host.online:
        return f"it is {host.status}"
    if host.max_incoming < 1:
        return "it accepts no incoming migrations (its limit is 0)"
    return ""


def _refusal(guest, source, host, committed):
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


def _storage(guest, source, host, copy_room, replace_own_leftovers=False):
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


def _shared_with(disk, source, host):
    here = source.pools.get(disk.pool)
    there = host.pools.get(disk.pool)
    return bool(here and there and here.shared and there.shared and there.active and here.path == there.path)


def _move(guest, source, host, mode, pool, copied, committed, speed_bps):
    seconds = MOVE_OVERHEAD_SECONDS + ((guest.memory if guest.live else 0) + copied) / speed_bps
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


def _left(guest, reason):
    return {"domain": guest.id, "domain_name": guest.name, "reason": reason}


def _nowhere(refusals):
    """One sentence for all the hosts that refused, hosts with the same reason together."""
    if not refusals:
        return "there is no other host to move it to."
    by_reason = {}
    for name, why in sorted(refusals.items()):
        by_reason.setdefault(why, []).append(name)
    parts = []
    for why, names in sorted(by_reason.items(), key=lambda item: item[1][0]):
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        parts.append(f"{shown}: {why}")
    return "it fits on no other host: " + "; ".join(parts) + "."


def schedule(moves, hosts):
    """Seconds until every move is done, starting each as soon as its source
    has an outgoing slot and its target an incoming one, in plan order."""
    out_free = {h.id: max(1, h.max_outgoing) for h in hosts.values()}
    in_free = {h.id: max(1, h.max_incoming) for h in hosts.values()}
    queues = {}
    for move in moves:
        queues.setdefault(move["source"], []).append(move)
    running = []  # heap of (end time, order, move)
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
