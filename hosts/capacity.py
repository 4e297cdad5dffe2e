"""Capacity: what a host has promised its guests, against what it can hold.

The one place kvmweb computes it; the pre-flight checks, the claim a migration
makes when it starts, the pages and the API all ask here.

- **Committed memory** is the maximum memory (libvirt's ``<memory>``, not what
  the balloon shows now) of every guest the host runs (its Domain rows in a
  state that holds memory), plus that of every guest on its way in (a migration
  into the host that has been claimed and has not finished), each guest once.
  QEMU allocates a guest's memory lazily, so the host's free memory stays high
  until the guests touch theirs: free memory now says nothing of what is promised.
- **Memory capacity** is ``(total − reserved − huge page pool) × allocation ratio``.
  Guests backed by huge pages take their memory from the pool of their page size
  instead, and are counted there, in pages.
- **vCPUs** alike: committed vCPUs against ``CPUs × vCPU allocation ratio``; too
  many only slows the guests down, so the checks warn and never refuse.

The reserve and the ratios are set per host (admin, API); a host that leaves
them empty gets the defaults from the settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Exists, F, IntegerField, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce

# The pure figures, read from here too (explicitly re-exported): capacity.of, capacity.Capacity.
from .figures import Capacity as Capacity
from .figures import Guest as Guest
from .figures import choose_copy_pool as choose_copy_pool
from .figures import of as of
from .models import HOLDS_MEMORY, Domain, DomainStateChoices, Host

# Migrations that are on their way into their target: claimed (under the
# per-host lock in migrations_app's engine) and not finished. The values of
# migrations_app.models.Status, named here because hosts never imports
# migrations_app (a test keeps the two in step).
IN_FLIGHT = ("checking", "running")


def for_host(host: Host, exclude_migration: int | None = None) -> Capacity:
    """A host's capacity as the database says it is now (one query).

    ``exclude_migration``: a migration's own claim does not count against it."""
    if exclude_migration is None:
        rows = _prepared("host", host.pk)
    else:
        rows = _prepared("host_excluding", host.pk, exclude_migration)
    if not rows:
        raise Host.DoesNotExist(f"host {host.pk} is gone")
    return of(rows[0])


def for_any(host: Host) -> Capacity:
    """A host's capacity: from its annotations if it has them, else read (one query)."""
    return of(host) if hasattr(host, "memory_committed") else for_host(host)


def with_counts() -> list[Host]:
    """Every host by name, with its domain counts (``domain_count``, ``running_count``)
    and its committed figures: the dashboard's list, on its page and its socket."""
    return _prepared("dashboard")


def _dashboard_query() -> QuerySet[Host]:
    return with_committed(Host.objects.annotate(**domain_counts())).order_by("name")


def domain_counts() -> dict[str, Coalesce]:
    """Annotations ``domain_count`` and ``running_count`` of hosts, each a subquery:
    a Count across the join would group every domain row and evaluate the
    committed figures' subqueries once per row (40 ms instead of 1 ms for 8 hosts of
    50 domains on SQLite), and a paginated list's count would carry the join too."""
    mine = Domain.objects.filter(host=OuterRef("pk"))
    return {
        "domain_count": _total(mine, "host", Value(1)),
        "running_count": _total(mine.filter(state=DomainStateChoices.RUNNING), "host", Value(1)),
    }


# The queries asked most often (every migration's claim, checks and change of
# state, every dashboard), by name: each builds the query from its values.
_SHAPES: dict[str, Callable[..., QuerySet[Host]]] = {
    "host": lambda pk: with_committed(Host.objects.filter(pk=pk)),
    "host_excluding": lambda pk, excluded: with_committed(Host.objects.filter(pk=pk), excluded),
    "dashboard": _dashboard_query,
}
# Values no key takes, put where a prepared query's values go (see _compiled).
_MARKERS = (-7_000_001, -7_000_002)
_COMPILED: dict[tuple[str, str], tuple[str, tuple[Any, ...], list[list[int]], list[str]]] = {}


def _compiled(name: str) -> tuple[str, tuple[Any, ...], list[list[int]], list[str]]:
    """The SQL of the query ``name``, its parameters, and where its values go in
    them: built and compiled once per process and database.

    Django builds and compiles the committed figures' subqueries anew at every
    call: 10-15 ms of Python for a query the database answers in under 1 ms.
    The query is built once with markers for its values, which are found again
    among the compiled parameters and replaced at each call (see _prepared)."""
    key = (name, connection.vendor)
    if key not in _COMPILED:
        build = _SHAPES[name]
        markers = _MARKERS[: build.__code__.co_argcount]
        query = build(*markers).query
        sql, params = query.sql_with_params()
        slots = [[i for i, p in enumerate(params) if p == m] for m in markers]
        if not all(slots):
            raise RuntimeError(f"the prepared query {name} lost a value")
        _COMPILED[key] = (sql, tuple(params), slots, list(query.annotations))
    return _COMPILED[key]


def _prepared(name: str, *values: int) -> list[Host]:
    """The hosts the query ``name`` selects for ``values``."""
    sql, params, slots, annotations = _compiled(name)
    bound = list(params)
    for value, where in zip(values, slots, strict=True):
        for i in where:
            bound[i] = value
    rows = list(Host.objects.raw(sql, bound))
    # A raw query does not convert what the annotations' output fields would:
    # PostgreSQL's SUM of bigints is a numeric (a Decimal). Every one here is a count.
    for row in rows:
        for field in annotations:
            value = getattr(row, field)
            if value is not None:
                setattr(row, field, int(value))
    return rows


def prepare() -> None:
    """Compile the prepared queries now (a worker, before it forks its work horses)."""
    for name in _SHAPES:
        _compiled(name)


# -- the database side: one annotation, so a list of hosts costs one query ----


def _migrations() -> Any:
    # The Migration model, reached through Host's reverse relation: hosts does
    # not import migrations_app.
    return Host._meta.get_field("incoming_migrations").related_model


def _running_here(host_ref: Any) -> QuerySet[Domain]:
    running: QuerySet[Domain] = Domain.objects.filter(host=host_ref, state__in=HOLDS_MEMORY)
    return running


def _on_their_way(host_ref: Any, exclude_migration: int | None) -> QuerySet[Any]:
    """Migrations into the host whose guest it does not run yet (a sync during a
    live migration may already show the guest, paused, on the target), less
    cold migrations of a guest that was shut off: it stays so on the target."""
    qs: QuerySet[Any] = _migrations().objects.filter(target=host_ref, status__in=IN_FLIGHT).exclude(was_running=False)
    if exclude_migration is not None:
        qs = qs.exclude(pk=exclude_migration)
    return qs.exclude(Exists(_running_here(OuterRef("target")).filter(uuid=OuterRef("domain_uuid"))))


def _guest_figure(field: str, hugepage_kib: int | None = None) -> Subquery:
    """One figure of a migration's guest, from the inventory (its largest row)."""
    rows = Domain.objects.filter(uuid=OuterRef("domain_uuid"))
    if hugepage_kib is not None:
        rows = rows.filter(hugepage_kib=hugepage_kib)
    return Subquery(rows.order_by(f"-{field}").values(field)[:1])


def _total(qs: QuerySet[Any], group_by: str, expression: Any) -> Coalesce:
    return Coalesce(
        Subquery(qs.order_by().values(group_by).annotate(total=Sum(expression)).values("total")[:1]),
        Value(0),
        output_field=IntegerField(),
    )


def with_committed(queryset: QuerySet[Host], exclude_migration: int | None = None) -> QuerySet[Host]:
    """Annotate hosts with ``memory_committed`` (bytes; ``memory_incoming`` of it on
    its way in), ``vcpus_committed`` and ``incoming_count``: one query for any number."""
    host = OuterRef("pk")
    incoming = _on_their_way(host, exclude_migration)
    return queryset.annotate(
        memory_incoming=_total(incoming.annotate(need=_guest_figure("max_memory", 0)), "target", "need"),
        memory_committed=_total(_running_here(host).filter(hugepage_kib=0), "host", "max_memory")
        + F("memory_incoming"),
        vcpus_committed=_total(_running_here(host), "host", "vcpus")
        + _total(incoming.annotate(need=_guest_figure("vcpus")), "target", "need"),
        incoming_count=_total(incoming.annotate(one=Value(1)), "target", "one"),
    )


@dataclass(frozen=True)
class HugePages:
    size_kib: int
    pool: int  # pages of this size on the host
    committed: int  # pages promised to guests

    def fits(self, guest: Guest) -> bool:
        return self.committed + pages_for(guest) <= self.pool


def pages_for(guest: Guest) -> int:
    return -(-guest.max_memory // (guest.hugepage_kib * 1024))


def hugepages_for(host: Host, size_kib: int, exclude_migration: int | None = None) -> HugePages:
    """The host's pool of one huge page size and the pages its guests are promised."""
    incoming = _on_their_way(host.pk, exclude_migration).values("domain_uuid")
    rows = Domain.objects.filter(Q(host=host, state__in=HOLDS_MEMORY) | Q(uuid__in=incoming), hugepage_kib=size_kib)
    guests = {d.uuid: Guest.of(d) for d in rows}  # each guest once
    return HugePages(
        size_kib=size_kib,
        pool=int((host.hugepages or {}).get(str(size_kib), 0)),
        committed=sum(pages_for(g) for g in guests.values()),
    )


# -- room for copied disks -------------------------------------------------------------


def disks_to_copy(domain: Any) -> tuple[int, str]:
    """(bytes a copy of ``domain``'s disks moves, the pool its first disk is in),
    from the inventory: the disks a migration moves (not CD-ROMs or floppies)."""
    disks = [d for d in domain.disks if d.get("device") == "disk" and d.get("path")]
    need = sum(d.get("allocation") or d.get("capacity") or 0 for d in disks)
    return need, next((d["pool"] for d in disks if d.get("pool")), "")


def copy_pool_for(domain: Any, host: Host) -> tuple[str | None, int, int]:
    """(the pool on ``host`` to copy ``domain``'s disks into or None, the bytes
    to copy, the most room any active pool there has), from the inventory."""
    need, prefer = disks_to_copy(domain)
    free = dict(host.pools.filter(active=True).values_list("name", "available"))
    return choose_copy_pool(free, need, prefer), need, max(free.values(), default=0)
