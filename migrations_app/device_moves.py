"""What a migration does with the devices that tie a VM to its host.

``checks.devices`` says before the start what happens here: consoles and serial
ports bound to the source's address listen on the target's, removable media
the target cannot see are ejected when the request says so, and a cold
migration carries what libvirt keeps per host (NVRAM, TPM state, snapshot
metadata). The engine calls these and records what they did in the
migration's log.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings

from hosts import devices

if TYPE_CHECKING:
    from hosts.models import Host

# libvirt's own place for a VM's swtpm state ("tpm2" or "tpm1.2" below it).
TPM_STATE_DIR = "/var/lib/libvirt/swtpm/{uuid}/{version}"


def listen_addresses(
    devs: devices.DomainDevices, source_host: Host, target_host: Host
) -> tuple[dict[str, str], list[devices.Listener]]:
    """({old: new} for every listener bound to an address of the source, [listeners with no new address]).

    An address the source is reached at becomes the target's; another
    host-bound address becomes KVMWEB_LISTEN_ADDRESS if that is set."""
    source_names = {source_host.address(), urlsplit(source_host.uri).hostname} - {None, ""}
    target_address = target_host.address()
    mapping: dict[str, str] = {}
    unplaced: list[devices.Listener] = []
    for listener in devs.listeners:
        if devices.is_portable_address(listener.address):
            continue
        if listener.address in source_names and target_address:
            mapping[listener.address] = target_address
        elif settings.KVMWEB_LISTEN_ADDRESS:
            mapping[listener.address] = settings.KVMWEB_LISTEN_ADDRESS
        else:
            unplaced.append(listener)
    return mapping, unplaced


def destination_xml(migration: Any, dst: Any, xml: str) -> tuple[str, list[str]]:
    """(the domain XML for the target, [what was changed, in words]); ``xml`` itself and []
    when nothing in it is bound to the source."""
    devs = devices.parse(xml)
    mapping, _unplaced = listen_addresses(devs, migration.source, migration.target)
    eject = []
    if migration.eject_media:
        eject = [m.target for m in devs.media if m.path and dst.volume_by_path(m.path) is None]
    return devices.adapt(xml, mapping, eject)


def carry_state(migration: Any, src: Any, dst: Any, xml: str) -> tuple[list[str], list[str]]:
    """Copy the NVRAM file and swtpm state of a shut-off VM to the target, where libvirt
    looks for them at the same paths. Returns what was copied, in words, and the paths written."""
    devs = devices.parse(xml)
    carried, written = [], []
    if devs.nvram:
        directory, name = posixpath.split(devs.nvram)
        files = src.read_files(directory, [name])
        if files:
            written += dst.write_files(directory, files)
            carried.append(f"the UEFI variables ({devs.nvram})")
    if devs.tpm.startswith("emulator"):
        version = "tpm1.2" if devs.tpm.endswith("1.2") else "tpm2"
        directory = TPM_STATE_DIR.format(uuid=migration.domain_uuid, version=version)
        files = src.read_files(directory)
        if files:
            written += dst.write_files(directory, files)
            carried.append(f"the TPM state ({directory})")
    return carried, written


def carry_snapshots(migration: Any, src: Any, dst: Any, rewrite: Any) -> int:
    """Define the source's snapshots on the target (their data is in the disks), each
    snapshot's XML passed through ``rewrite`` (the disks' new paths). Returns how many."""
    uuid = str(migration.domain_uuid)
    xmls, current = src.snapshots_xml(uuid)
    if xmls:
        dst.redefine_snapshots(uuid, [rewrite(x) for x in xmls], current)
    return len(xmls)
