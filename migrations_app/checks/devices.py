"""Pre-flight checks for the devices that tie a VM to its host.

Each names the device and says what to do. What kvmweb adapts (consoles and
serial ports bound to the source's address, removable media the operator chose
to eject) is said here before the start and recorded in the migration's log
when it happens; what cannot move is refused here, not by libvirt at the start.
Facts come from ``hosts.devices`` through the seam.

What libvirt 9.0 does with per-host state, found on the lab: a live migration
carries the UEFI variables (the pflash contents) and the swtpm state in QEMU's
migration stream, and writes them to the target's own NVRAM file and TPM
directory; the source's NVRAM file stays behind. A cold migration carries
nothing by itself, so kvmweb copies the NVRAM file and TPM state. libvirt
refuses to migrate a running VM that has snapshot metadata.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hosts.devices import DomainDevices, format_cpuset

from ..device_moves import listen_addresses
from ..models import Mode, StorageMode
from .base import FAIL, PASS, WARN, CheckInput, Checks

if TYPE_CHECKING:
    from hosts.libvirt import Connection, DomainDetails


def check_devices(checks: Checks, v: CheckInput, dom: DomainDetails, source: Connection, target: Connection) -> None:
    """The device checks, one family run as one check (the devices are read once)."""
    devs = source.domain_devices(v.uuid)
    for check in (
        _check_media,
        _check_consoles,
        _check_host_devices,
        _check_macvtap,
        _check_pinning,
        _check_backing_chain,
        _check_snapshots,
        _check_firmware,
    ):
        check(checks, v, devs, source, target)


def _check_media(checks: Checks, v: CheckInput, devs: DomainDevices, source: Connection, target: Connection) -> None:
    tname = v.target.name
    for medium in devs.media:
        if not medium.path:
            continue
        if target.volume_by_path(medium.path) is not None:
            checks.add("removable_media", PASS, f"{tname} sees {medium.describe()} too.")
        elif v.eject_media:
            checks.add(
                "removable_media",
                WARN,
                f"{medium.describe()} is not on storage {tname} sees: it will be ejected for the "
                "migration, as requested; the source's definition keeps it until the move succeeds.",
            )
        else:
            checks.add(
                "removable_media",
                FAIL,
                f"{medium.describe()} is not on storage {tname} sees, so {v.name} could not start "
                f"there. Choose 'eject removable media for the migration', or put the image on shared "
                "storage.",
            )


def _check_consoles(checks: Checks, v: CheckInput, devs: DomainDevices, source: Connection, target: Connection) -> None:
    mapping, unplaced = listen_addresses(devs, v.source, v.target)
    for listener in devs.listeners:
        if listener in unplaced:
            checks.add(
                "consoles",
                FAIL,
                f"The {listener.describe()} is bound to an address kvmweb does not know on "
                f"{v.target.name}, where it could not listen. Make it listen on 0.0.0.0 or on a "
                "libvirt network, or set KVMWEB_LISTEN_ADDRESS to the address to use after a move.",
            )
        elif listener.address in mapping:
            checks.add(
                "consoles",
                WARN,
                f"The {listener.describe()} is bound to {v.source.name}'s address: on "
                f"{v.target.name} it will listen on {mapping[listener.address]} instead.",
            )
        else:
            checks.add("consoles", PASS, f"The {listener.describe()} can listen on any host.")


def _check_host_devices(
    checks: Checks, v: CheckInput, devs: DomainDevices, source: Connection, target: Connection
) -> None:
    if not devs.hostdevs:
        return
    names = ", ".join(d.describe() for d in devs.hostdevs)
    if v.mode == Mode.LIVE:
        checks.add(
            "host_devices",
            FAIL,
            f"{v.name} uses {names} of {v.source.name} directly (passthrough): such devices cannot "
            "move while the VM runs. Use a cold migration to a host with the same device, or detach it first.",
        )
        return
    present = target.node_devices()
    missing = [d for d in devs.hostdevs if (d.nodedev or f"{d.type} {d.address}") not in present]
    if missing:
        checks.add(
            "host_devices",
            FAIL,
            f"{v.target.name} has no {', '.join(d.describe() for d in missing)}, which {v.name} "
            "uses directly (passthrough). Choose a host that has it, or detach it first.",
        )
    else:
        checks.add(
            "host_devices",
            WARN,
            f"{v.target.name} has {names} as well; make sure no other VM uses it there.",
        )


def _check_macvtap(checks: Checks, v: CheckInput, devs: DomainDevices, source: Connection, target: Connection) -> None:
    tname = v.target.name
    for nic in devs.direct:
        # has_bridge asks for any host interface by name, bridge or not.
        has = target.has_bridge(nic.dev)
        if has is None:
            checks.add(
                "macvtap",
                WARN,
                f"{tname}'s libvirt cannot list host interfaces, so kvmweb cannot see {nic.dev}, which "
                f"{v.name}'s macvtap ({nic.mode}) interface uses. Make sure it exists there.",
            )
        elif has:
            checks.add("macvtap", PASS, f"{tname} has {nic.dev} for the macvtap ({nic.mode}) interface.")
        else:
            checks.add(
                "macvtap",
                FAIL,
                f"{tname} has no network device {nic.dev}, which {v.name}'s macvtap ({nic.mode}) "
                "interface sits on. Give it a device of that name, or change the interface first.",
            )


def _check_pinning(checks: Checks, v: CheckInput, devs: DomainDevices, source: Connection, target: Connection) -> None:
    if not (devs.vcpu_cpus or devs.emulator_cpus or devs.numa_nodes):
        return
    cpus, cells = target.host_topology()
    tname = v.target.name
    problems = []
    pins = (("its vCPUs are pinned to", devs.vcpu_cpus), ("its emulator is pinned to", devs.emulator_cpus))
    for what, wanted in pins:
        if wanted - cpus:
            problems.append(f"{what} host CPUs {format_cpuset(wanted)}, and {tname} has {format_cpuset(cpus)}")
    if devs.numa_nodes - cells:
        problems.append(
            f"its memory is bound to NUMA nodes {format_cpuset(devs.numa_nodes)}, and {tname} has "
            f"{format_cpuset(cells)}"
        )
    if problems:
        checks.add(
            "pinning",
            FAIL,
            f"{v.name} cannot run as pinned on {tname}: {'; '.join(problems)}. Change its <cputune> "
            "and <numatune> to fit the target, or choose a larger host.",
        )
    else:
        checks.add("pinning", PASS, f"{tname} has every host CPU and NUMA node {v.name} is pinned to.")


def _check_backing_chain(
    checks: Checks, v: CheckInput, devs: DomainDevices, source: Connection, target: Connection
) -> None:
    tname = v.target.name
    for chain in devs.chains:
        if not chain.backing:
            continue
        files = ", ".join(chain.backing)
        if v.storage == StorageMode.SHARED:
            missing = [f for f in chain.backing if target.volume_by_path(f, refresh=False) is None]
            if missing:
                checks.add(
                    "backing_chain",
                    FAIL,
                    f"Disk {chain.target} ({chain.path}) is built on {', '.join(missing)}, which {tname} "
                    "does not see: put the backing files on the shared storage too, or choose 'copy the "
                    "disks', which flattens the chain.",
                )
            else:
                checks.add("backing_chain", PASS, f"{tname} sees every backing file of disk {chain.target} ({files}).")
        else:
            checks.add(
                "backing_chain",
                WARN,
                f"Disk {chain.target} ({chain.path}) is built on {files}: the copy on {tname} will be one "
                "file holding all of it (the chain is flattened), larger than the top file alone.",
            )


def _check_snapshots(
    checks: Checks, v: CheckInput, devs: DomainDevices, source: Connection, target: Connection
) -> None:
    if not devs.snapshots:
        return
    if v.mode == Mode.LIVE:
        checks.add(
            "snapshots",
            FAIL,
            f"{v.name} has {devs.snapshots} snapshot(s). libvirt refuses to move a running VM that "
            "has snapshots. Migrate it cold (kvmweb moves the snapshots with it), or delete them first.",
        )
    else:
        checks.add(
            "snapshots",
            WARN,
            f"{v.name} has {devs.snapshots} snapshot(s): kvmweb defines them again on "
            f"{v.target.name}. Snapshots kept in a file of their own are not copied.",
        )


def _check_firmware(checks: Checks, v: CheckInput, devs: DomainDevices, source: Connection, target: Connection) -> None:
    if not (devs.nvram or devs.tpm):
        return
    parts = []
    if devs.nvram:
        parts.append(f"UEFI variables ({devs.nvram})")
    if devs.tpm:
        parts.append(f"TPM state ({devs.tpm})")
    if devs.tpm and not devs.tpm.startswith("emulator"):
        checks.add(
            "firmware",
            FAIL,
            f"{v.name} uses {v.source.name}'s own TPM ({devs.tpm}), which cannot move. Detach it first.",
        )
    elif v.mode == Mode.LIVE:
        checks.add(
            "firmware",
            PASS,
            f"The {' and '.join(parts)} travel with the memory: libvirt writes them on {v.target.name}.",
        )
    else:
        checks.add(
            "firmware",
            PASS,
            f"kvmweb copies the {' and '.join(parts)} to {v.target.name}, where they live in per-host files.",
        )
