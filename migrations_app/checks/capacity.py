"""Room on the target: memory (or huge pages) against what it has promised, and vCPUs.
The claim that starts a migration asks ``capacity_results`` too."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.formatting import size
from hosts import capacity

from ..models import Mode
from .base import FAIL, PASS, WARN, CheckInput, CheckResult, Checks

if TYPE_CHECKING:
    from hosts.libvirt import Connection, DomainDetails
    from hosts.models import Host


def check_memory(checks: Checks, v: CheckInput, dom: DomainDetails, source: Connection, target: Connection) -> None:
    guest = capacity.Guest.of(dom.info)
    if v.mode == Mode.COLD and not dom.active:
        # It stays shut off on the target: nothing is promised, but say whether it could start there.
        stays = f"{v.name} is shut off and stays so on {v.target.name}"
        for r in capacity_results(v.target, guest, v.migration_id, free=target.free_memory()):
            if r.result == PASS:
                checks.add(r.name, PASS, f"{stays}; it could start there: {r.message}")
            else:
                checks.add(
                    r.name, WARN, f"{stays}, so it needs nothing there now, but it could not start there: {r.message}"
                )
        return
    checks.results.extend(capacity_results(v.target, guest, v.migration_id, free=target.free_memory()))


def capacity_results(
    host: Host, guest: capacity.Guest, exclude_migration: int | None = None, free: int | None = None
) -> list[CheckResult]:
    """Whether ``host`` can hold ``guest`` on top of what it has promised (hosts/capacity.py):
    memory (or huge pages) fail when it cannot, vCPUs only warn. ``free``: the host's
    free memory now, when it was asked. The claim that starts a migration asks this too."""
    cap = capacity.for_host(host, exclude_migration)
    if guest.hugepage_kib:
        memory = _hugepages_result(host, guest, exclude_migration)
    else:
        memory = _memory_result(host, guest, cap, free)
    return [memory, _vcpus_result(host, guest, cap)]


def _promised_to(cap: capacity.Capacity) -> str:
    if cap.incoming > 1:
        return f"the guests it runs and the {cap.incoming} on their way there"
    return "the guests it runs" + (" and the one on its way there" if cap.incoming else "")


def _memory_result(host: Host, guest: capacity.Guest, cap: capacity.Capacity, free: int | None) -> CheckResult:
    name, need = guest.name, guest.max_memory
    if not cap.memory_fits(guest):
        return CheckResult(
            "memory",
            FAIL,
            f"{host.name} cannot hold {name}: {size(cap.memory_committed)} of the {size(cap.memory_capacity)} "
            f"it can give guests is already promised to {_promised_to(cap)}, and {name} may use up to "
            f"{size(need)}. Choose another host; or, if {host.name} can really hold more, lower its reserved "
            "memory or raise its memory allocation ratio.",
        )
    if free is not None and need > free:
        return CheckResult(
            "memory",
            FAIL,
            f"{host.name} has {size(free)} of memory free now and {name} may use up to {size(need)}. "
            "Free memory there or choose another host.",
        )
    room = cap.memory_room - need
    if room < cap.memory_capacity * 0.1 or (free is not None and need * 1.2 > free):
        return CheckResult(
            "memory",
            WARN,
            f"{host.name} can hold {name} ({size(need)}), leaving little room: {size(max(room, 0))} of its "
            f"{size(cap.memory_capacity)} unpromised afterwards"
            + (f", {size(free)} free now." if free is not None else "."),
        )
    return CheckResult(
        "memory",
        PASS,
        f"{host.name} has {size(cap.memory_room)} of its {size(cap.memory_capacity)} for guests unpromised "
        f"for {name}'s {size(need)}" + (f" ({size(free)} free now)." if free is not None else "."),
    )


def _hugepages_result(host: Host, guest: capacity.Guest, exclude_migration: int | None) -> CheckResult:
    pages = capacity.hugepages_for(host, guest.hugepage_kib, exclude_migration)
    page_size = size(guest.hugepage_kib * 1024)
    need = capacity.pages_for(guest)
    if not pages.pool:
        return CheckResult(
            "hugepages",
            FAIL,
            f"{guest.name}'s memory is backed by huge pages of {page_size}, and {host.name} has none of that size. "
            f"Set some aside on {host.name} (vm.nr_hugepages, or hugepages= at boot) or choose another host.",
        )
    if not pages.fits(guest):
        return CheckResult(
            "hugepages",
            FAIL,
            f"{host.name} cannot hold {guest.name}: {pages.committed} of its {pages.pool} huge pages of {page_size} "
            f"are already promised to the guests it runs or that are on their way there, and {guest.name} "
            f"needs {need}. Choose another host, or set more huge pages aside there.",
        )
    return CheckResult(
        "hugepages",
        PASS,
        f"{host.name} has {pages.pool - pages.committed} of its {pages.pool} huge pages of {page_size} unpromised; "
        f"{guest.name} needs {need}.",
    )


def _vcpus_result(host: Host, guest: capacity.Guest, cap: capacity.Capacity) -> CheckResult:
    after = cap.vcpus_committed + guest.vcpus
    if not cap.vcpus_fit(guest):
        return CheckResult(
            "vcpus",
            WARN,
            f"{host.name} would run {after} vCPUs on its {cap.cpu_count} CPUs, more than its vCPU "
            f"allocation ratio of {cap.cpu_ratio:g} allows ({cap.vcpu_capacity}): its guests will be slower. "
            "Choose a host with fewer vCPUs promised if they need their speed.",
        )
    return CheckResult(
        "vcpus",
        PASS,
        f"{host.name} would run {after} vCPUs on its {cap.cpu_count} CPUs (at most {cap.vcpu_capacity}).",
    )
