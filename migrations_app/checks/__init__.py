"""Pre-flight checks: what must hold for a migration to work (CPU, memory,
storage, networks, devices, the hosts' login to each other), and the usual
reasons one fails, asked of the real hosts before anything moves.

Each check answers pass, warn or fail with a sentence an administrator can act
on. A failed check stops the migration; a warning does not. The checks' names
are part of the API (the ``checks`` of a migration and of a dry run).

One module per family, each check a function of the same shape (``base.Check``)
reading one frozen ``CheckInput``:

- ``placement``: one copy of the VM only, the target not in maintenance, placement rules
- ``access``: both hosts answer, the target's host name, the source's login to the target
- ``state``: the VM's state, its name and UUID free on the target
- ``cpu``: architecture, CPU vendor and model, NX flag
- ``network``: bridges and networks
- ``storage``: shared storage proved, or room and free names in the target pool
- ``capacity``: memory or huge pages, vCPUs
- ``convergence``: will a live move converge
- ``devices``: media, consoles, passthrough, macvtap, pinning, backing files, snapshots, firmware
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from hosts.libvirt import HostError

from . import access, capacity, convergence, cpu, devices, network, placement, prediction, state, storage
from .base import FAIL, LABELS, PASS, WARN, Check, CheckInput, CheckResult, Checks
from .capacity import capacity_results
from .placement import placement_check, split_brain_message
from .storage import clash_message, own_leftovers

if TYPE_CHECKING:
    from hosts.libvirt import Connection

    from ..models import Migration
    from ..request import MigrationRequest

__all__ = [
    "FAIL",
    "LABELS",
    "PASS",
    "WARN",
    "CheckInput",
    "CheckResult",
    "Checks",
    "capacity_results",
    "clash_message",
    "own_leftovers",
    "placement_check",
    "run_checks",
    "split_brain_message",
]

# The checks that read the VM on the source, in the order they run (and their
# results are shown); each one's unexpected libvirt error fails it under its name.
ORDER: tuple[Check, ...] = (
    placement.check_maintenance,
    placement.check_placement_rules,
    state.check_state,
    access.check_hostname,
    access.check_migration_tls,
    access.check_peer_login,
    cpu.check_arch,
    cpu.check_cpu_vendor,
    cpu.check_cpu_model,
    cpu.check_nx,
    state.check_clash,
    network.check_networks,
    storage.check_storage,
    capacity.check_memory,
    convergence.check_convergence,
    prediction.check_prediction,
    devices.check_devices,
)


def run_checks(
    req: MigrationRequest | Migration, source: Connection | None = None, target: Connection | None = None
) -> list[CheckResult]:
    """Run every check for a request (a request.MigrationRequest or a Migration).

    ``source``/``target`` are open connections when the caller has them
    (the engine); otherwise they are opened and closed here.
    """
    checks = Checks()
    v = CheckInput.of(req)
    if not placement.check_single_copy(checks, v):
        return checks.results
    with contextlib.ExitStack() as stack:
        if source is None:
            source = access.connect(stack, checks, "source_reachable", v.source)
        if target is None:
            target = access.connect(stack, checks, "target_reachable", v.target)
        if source is None or target is None:
            return checks.results
        _run_all(checks, v, source, target)
    return checks.results


def _run_all(checks: Checks, v: CheckInput, source: Connection, target: Connection) -> None:
    try:
        dom = source.domain_details(v.uuid)
    except HostError as e:
        checks.add("domain_state", FAIL, f"kvmweb could not read {v.name} on the source: {e.plain}", e.detail)
        return
    if dom is None:
        checks.add(
            "domain_state",
            FAIL,
            f"{v.name} is not on {v.source.name} any more. Refresh the inventory to see where it is.",
        )
        return
    for check in ORDER:
        try:
            check(checks, v, dom, source, target)
        except HostError as e:
            checks.add(check.__name__.removeprefix("check_"), FAIL, f"kvmweb could not check this: {e.plain}", e.detail)
