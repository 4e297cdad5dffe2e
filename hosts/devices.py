"""What a domain's definition ties to one host, read from its XML, and the
destination XML that unties it.

Pure code (no libvirt): the seam reads the XML and the host facts, the
pre-flight checks judge them, and the engine rewrites the XML with ``adapt``.

A VM's devices name things that exist on one host only: a CD-ROM image in a
local directory, VNC or a serial port bound to the host's own address, a PCI
card passed through, a macvtap on a host NIC, pinning to host CPUs, a qcow2 backing file, per-host NVRAM and TPM state.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

CHARDEV_TAGS = ("serial", "console", "parallel", "channel")
# Chardev types whose <source mode='bind' host=...> makes QEMU listen on an address.
SOCKET_CHARDEVS = ("tcp", "udp")


@dataclass(frozen=True)
class Medium:
    """A CD-ROM or floppy drive, with the image in it (``path`` empty: no media)."""

    device: str
    target: str
    path: str

    def describe(self) -> str:
        return f"the {'CD-ROM' if self.device == 'cdrom' else self.device} {self.target} ({self.path})"


@dataclass(frozen=True)
class Listener:
    """A graphics console or chardev that listens on an address of the host."""

    kind: str  # "VNC graphics", "serial port 1 (TCP)"
    address: str
    port: str = ""

    def describe(self) -> str:
        return f"{self.kind} on {self.address}" + (f" port {self.port}" if self.port else "")


@dataclass(frozen=True)
class HostDevice:
    """A host device passed through to the guest."""

    type: str  # pci, usb, mdev, scsi...
    address: str  # 0000:03:00.0, 046d:c52b (vendor:product), 1.3 (bus.device), mdev UUID
    nodedev: str = ""  # libvirt's node device name where it can be derived (pci_0000_03_00_0)

    def describe(self) -> str:
        return f"{self.type.upper()} device {self.address}"


@dataclass(frozen=True)
class DirectInterface:
    """A macvtap interface on a host network device."""

    dev: str
    mode: str


@dataclass
class DiskChain:
    """A disk and the backing files below it, top first."""

    target: str
    path: str
    backing: list[str] = field(default_factory=list)


@dataclass
class DomainDevices:
    media: list[Medium] = field(default_factory=list)
    listeners: list[Listener] = field(default_factory=list)
    hostdevs: list[HostDevice] = field(default_factory=list)
    direct: list[DirectInterface] = field(default_factory=list)
    vcpu_cpus: set[int] = field(default_factory=set)  # host CPUs named by <vcpu cpuset>, vcpupin
    emulator_cpus: set[int] = field(default_factory=set)  # emulatorpin, iothreadpin
    numa_nodes: set[int] = field(default_factory=set)  # numatune
    chains: list[DiskChain] = field(default_factory=list)
    nvram: str = ""
    nvram_template: str = ""
    tpm: str = ""  # "emulator 2.0", "passthrough /dev/tpm0", or ""
    snapshots: int = 0


def parse_cpuset(text: str | None) -> set[int]:
    """libvirt's cpuset syntax ("0-3,^2,8") as a set of numbers."""
    wanted: set[int] = set()
    unwanted: set[int] = set()
    for part in (text or "").replace(" ", "").split(","):
        if not part:
            continue
        into = wanted
        if part.startswith("^"):
            into, part = unwanted, part[1:]
        low, _, high = part.partition("-")
        into.update(range(int(low), int(high or low) + 1))
    return wanted - unwanted


def format_cpuset(numbers: Iterable[int]) -> str:
    """The other way round, compressed into ranges: {0,1,2,5} -> "0-2,5"."""
    out: list[str] = []
    run: list[int] = []
    for n in sorted(numbers):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [n]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def is_portable_address(address: str | None) -> bool:
    """Whether an address to listen on exists on any host (wildcard, loopback), so it can stay."""
    if not address:
        return True
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address == "localhost"
    return ip.is_unspecified or ip.is_loopback


def parse(xml: str) -> DomainDevices:
    """The host-specific devices of a domain definition (live or inactive XML)."""
    root = ET.fromstring(xml)
    found = DomainDevices()
    devices = root.find("devices")
    if devices is None:
        devices = ET.Element("devices")
    for disk in devices.iterfind("disk"):
        _parse_disk(found, disk)
    for i, graphics in enumerate(devices.iterfind("graphics")):
        address = _graphics_address(graphics)
        if address is not None:
            kind = f"{graphics.get('type', '').upper()} graphics" + (f" {i + 1}" if i else "")
            # With autoport the port is chosen at each start, on each host.
            port = "" if graphics.get("autoport") == "yes" else graphics.get("port", "")
            found.listeners.append(Listener(kind, address, port))
    for tag in CHARDEV_TAGS:
        for dev in devices.iterfind(tag):
            source = _bind_source(dev)
            if source is not None and not _mirrors_serial(tag, dev):
                # _bind_source returns only a source that names its host.
                found.listeners.append(
                    Listener(_chardev_kind(tag, dev), source.get("host", ""), source.get("service", ""))
                )
    for hostdev in devices.iterfind("hostdev"):
        _parse_hostdev(found, hostdev)
    for nic in devices.iterfind("interface"):
        if nic.get("type") == "direct":
            source = nic.find("source")
            if source is not None and source.get("dev"):
                found.direct.append(DirectInterface(source.get("dev", ""), source.get("mode", "vepa")))
        elif nic.get("type") == "hostdev":
            _parse_hostdev(found, nic)
    vcpu = root.find("vcpu")
    if vcpu is not None and vcpu.get("cpuset"):
        found.vcpu_cpus |= parse_cpuset(vcpu.get("cpuset"))
    for pin in root.iterfind("cputune/vcpupin"):
        found.vcpu_cpus |= parse_cpuset(pin.get("cpuset"))
    for tag in ("emulatorpin", "iothreadpin"):
        for pin in root.iterfind(f"cputune/{tag}"):
            found.emulator_cpus |= parse_cpuset(pin.get("cpuset"))
    for node in root.iterfind("numatune/memory"):
        if node.get("nodeset") and node.get("placement", "static") == "static":
            found.numa_nodes |= parse_cpuset(node.get("nodeset"))
    for node in root.iterfind("numatune/memnode"):
        found.numa_nodes |= parse_cpuset(node.get("nodeset"))
    nvram = root.find("os/nvram")
    if nvram is not None:
        found.nvram = (nvram.text or "").strip()
        found.nvram_template = nvram.get("template", "")
    tpm = devices.find("tpm")
    if tpm is not None:
        backend = tpm.find("backend")
        if backend is not None:
            if backend.get("type") == "emulator":
                found.tpm = f"emulator {backend.get('version', '')}".strip()
            else:
                device = backend.find("device")
                found.tpm = f"{backend.get('type')} {device.get('path', '') if device is not None else ''}".strip()
    return found


def _parse_disk(found: DomainDevices, disk: ET.Element) -> None:
    device = disk.get("device", "disk")
    source = disk.find("source")
    path = ""
    if source is not None:
        path = source.get("file") or source.get("dev") or ""
    target_element = disk.find("target")
    target = target_element.get("dev", "") if target_element is not None else ""
    if device in ("cdrom", "floppy"):
        found.media.append(Medium(device, target, path))
        return
    if device != "disk" or not path:
        return
    chain = DiskChain(target, path)
    backing = disk.find("backingStore")
    while backing is not None:
        below = backing.find("source")
        if below is None:
            break
        file = below.get("file") or below.get("dev")
        if file:
            chain.backing.append(file)
        backing = backing.find("backingStore")
    found.chains.append(chain)


def _graphics_address(graphics: ET.Element) -> str | None:
    """The address a VNC/SPICE console listens on, or None if it does not listen on one."""
    if graphics.get("type") not in ("vnc", "spice"):
        return None
    for listen in graphics.iterfind("listen"):
        if listen.get("type") == "address":
            return listen.get("address", "")
        if listen.get("type") in ("network", "socket", "none"):
            return None
    return graphics.get("listen")


def _bind_source(dev: ET.Element) -> ET.Element | None:
    if dev.get("type") not in SOCKET_CHARDEVS:
        return None
    for source in dev.iterfind("source"):
        if source.get("mode", "bind" if dev.get("type") == "udp" else "connect") == "bind" and source.get("host"):
            return source
    return None


def _mirrors_serial(tag: str, dev: ET.Element) -> bool:
    """A <console> that is the first serial port seen again (libvirt lists both)."""
    target = dev.find("target")
    return tag == "console" and target is not None and target.get("type", "serial") == "serial"


def _chardev_kind(tag: str, dev: ET.Element) -> str:
    target = dev.find("target")
    number = target.get("port") if target is not None else None
    name = {"serial": "serial port", "channel": "channel"}.get(tag, tag)
    if tag == "channel" and target is not None and target.get("name"):
        number = target.get("name")
    return f"{name}{' ' + number if number else ''} ({dev.get('type', '').upper()})"


def _parse_hostdev(found: DomainDevices, element: ET.Element) -> None:
    kind = element.get("type", "")
    source = element.find("source")
    if source is None:
        return
    address = source.find("address")
    if kind == "pci" and address is not None:
        dom, bus, slot, fn = (int(address.get(k, "0"), 0) for k in ("domain", "bus", "slot", "function"))
        text = f"{dom:04x}:{bus:02x}:{slot:02x}.{fn:x}"
        found.hostdevs.append(HostDevice("pci", text, f"pci_{dom:04x}_{bus:02x}_{slot:02x}_{fn:x}"))
    elif kind == "usb":
        vendor, product = source.find("vendor"), source.find("product")
        if vendor is not None and product is not None:
            text = f"{int(vendor.get('id', ''), 0):04x}:{int(product.get('id', ''), 0):04x}"
        elif address is not None:
            text = f"{address.get('bus')}.{address.get('device')}"
        else:
            text = "(unknown)"
        found.hostdevs.append(HostDevice("usb", text))
    elif kind == "mdev" and address is not None:
        found.hostdevs.append(HostDevice("mdev", address.get("uuid", "")))
    else:
        adapter = source.find("adapter")
        text = adapter.get("name", "") if adapter is not None else ET.tostring(source, encoding="unicode")[:80]
        found.hostdevs.append(HostDevice(kind or "host", text))


# ---------------------------------------------------------------------------
# The destination XML


def adapt(xml: str, addresses: dict[str, str] | None = None, eject: Collection[str] = ()) -> tuple[str, list[str]]:
    """Rewrite a domain's XML for another host.

    ``addresses`` maps a listen address of the source to the one to use on the
    target (graphics and bound chardevs); ``eject`` names the targets (sdc...)
    of removable drives to empty. Returns (xml, changes): ``changes`` says in
    words what was changed, for the migration's log. The XML comes back
    unchanged when there is nothing to do.
    """
    addresses = addresses or {}
    root = ET.fromstring(xml)
    changes: list[str] = []
    devices = root.find("devices")
    if devices is None:
        return xml, changes
    for disk in devices.iterfind("disk"):
        target = disk.find("target")
        if target is None or target.get("dev") not in eject:
            continue
        source = disk.find("source")
        if source is not None:
            path = source.get("file") or source.get("dev") or ""
            disk.remove(source)
            changes.append(f"ejected {path} from {disk.get('device')} {target.get('dev')}")
    for i, graphics in enumerate(devices.iterfind("graphics")):
        old = _graphics_address(graphics)
        if old is None or old not in addresses:
            continue
        new = addresses[old]
        if graphics.get("listen") == old:
            graphics.set("listen", new)
        for listen in graphics.iterfind("listen"):
            if listen.get("type") == "address" and listen.get("address") == old:
                listen.set("address", new)
        kind = f"{graphics.get('type', '').upper()} graphics" + (f" {i + 1}" if i else "")
        changes.append(f"{kind} listens on {new} instead of {old}")
    for tag in CHARDEV_TAGS:
        for dev in devices.iterfind(tag):
            source = _bind_source(dev)
            if source is None or source.get("host") not in addresses:
                continue
            old = source.get("host", "")
            source.set("host", addresses[old])
            if not _mirrors_serial(tag, dev):
                changes.append(f"{_chardev_kind(tag, dev)} listens on {addresses[old]} instead of {old}")
    if not changes:
        return xml, changes
    return ET.tostring(root, encoding="unicode"), changes
