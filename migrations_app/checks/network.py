"""The bridges and libvirt networks the VM is connected to, on the target."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import FAIL, PASS, WARN, CheckInput, Checks

if TYPE_CHECKING:
    from hosts.libvirt import Connection, DomainDetails


def check_networks(checks: Checks, v: CheckInput, dom: DomainDetails, source: Connection, target: Connection) -> None:
    tname = v.target.name
    missing, unknown, ok = [], [], []
    for nic in dom.info.interfaces:
        if nic.bridge:
            has = target.has_bridge(nic.bridge)
            if has is None:
                unknown.append(f"bridge {nic.bridge}")
            elif has:
                ok.append(f"bridge {nic.bridge}")
            else:
                missing.append(f"bridge {nic.bridge}")
        elif nic.network:
            state = target.network_state(nic.network)
            if state == "active":
                ok.append(f"network {nic.network}")
            elif state == "inactive":
                missing.append(f"network {nic.network} (defined but not started)")
            else:
                missing.append(f"network {nic.network}")
    if missing:
        checks.add(
            "networks",
            FAIL,
            f"{tname} lacks {', '.join(missing)} that {v.name} is connected to. Create it on "
            f"{tname} (for example with 'virsh iface-bridge ens33 br0') and try again.",
        )
    elif unknown:
        checks.add(
            "networks",
            WARN,
            f"{tname}'s libvirt cannot list host interfaces, so kvmweb cannot see "
            f"{', '.join(unknown)}. Make sure it exists there.",
        )
    elif ok:
        checks.add("networks", PASS, f"{tname} has {', '.join(ok)}.")
    else:
        checks.add("networks", PASS, f"{v.name} has no network interfaces to match.")
