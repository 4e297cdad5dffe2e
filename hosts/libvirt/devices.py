"""The part of a Connection that reads what ties a domain to its host and
carries per-host state (NVRAM, TPM, snapshot metadata) to another.

The XML is read by ``hosts.devices`` (pure code); this part asks libvirt for
the facts around it: backing chains, the host's CPUs and devices, and the
files libvirt keeps per host, which it reaches through storage pools only.
"""

from __future__ import annotations

import contextlib
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator

import libvirt

from hosts import devices

from .base import text
from .errors import HostError
from .storage import StorageOps, _xml_escape

# What read_files returns for each file: its bytes and its <permissions> XML.
FileCopy = tuple[bytes, str]


class DeviceOps(StorageOps):
    def domain_devices(self, uuid: object) -> devices.DomainDevices:
        """The host-bound devices of a domain, from its live XML, with the
        backing chains of its disks and the number of its snapshots."""
        dom = self._dom(uuid)
        found = devices.parse(self.call(dom.XMLDesc, 0))
        for chain in found.chains:
            # A running domain's XML lists the chain; a shut-off one's does not.
            chain.backing = chain.backing or self._backing_files(chain.path)
        found.snapshots = self.call(dom.snapshotNum, 0)
        return found

    def _backing_files(self, path: str) -> list[str]:
        files: list[str] = []
        while path and len(files) < 64:
            try:
                root = ET.fromstring(self._conn.storageVolLookupByPath(path).XMLDesc())
            except libvirt.libvirtError:
                break  # not in a pool: its chain cannot be read through libvirt
            path = text(root, "backingStore/path")
            if path in files:
                break
            if path:
                files.append(path)
        return files

    def host_topology(self) -> tuple[set[int], set[int]]:
        """(host CPU numbers, NUMA cell numbers) as libvirt's capabilities list them."""
        caps = ET.fromstring(self.call(self._conn.getCapabilities))
        cells = {int(c.get("id", 0)) for c in caps.iterfind("host/topology/cells/cell")}
        cpus = {int(c.get("id", 0)) for c in caps.iterfind("host/topology/cells/cell/cpus/cpu")}
        if not cpus:
            cpus = set(range(self.call(self._conn.getInfo)[2]))
        return cpus, cells or {0}

    def node_devices(self) -> set[str]:
        """libvirt's names of this host's devices (pci_0000_03_00_0...), and
        "usb vendor:product" for each USB device."""
        found = set()
        for dev in self.call(self._conn.listAllDevices, 0):
            found.add(dev.name())
            if "usb_device" in dev.listCaps():
                root = ET.fromstring(self.call(dev.XMLDesc, 0))
                vendor, product = root.find("capability/vendor"), root.find("capability/product")
                if vendor is not None and product is not None:
                    found.add(f"usb {int(vendor.get('id', '0'), 0):04x}:{int(product.get('id', '0'), 0):04x}")
        return found

    def flat_copy(self, path: str) -> str:
        """A copy of a qcow2 volume with its backing chain merged in, next to it
        (libvirt clones with qemu-img convert, which flattens). Returns its path."""
        vol = self.call(self._conn.storageVolLookupByPath, path)
        pool = self.call(vol.storagePoolLookupByVolume)
        _t, capacity, _a = self.call(vol.info)
        name = f".kvmweb-flat-{uuidlib.uuid4().hex[:12]}-{vol.name()}"
        xml = (
            f"<volume><name>{_xml_escape(name)}</name><capacity unit='bytes'>{int(capacity)}</capacity>"
            "<target><format type='qcow2'/></target></volume>"
        )
        return str(self.call(pool.createXMLFrom, xml, vol, 0).path())

    @contextlib.contextmanager
    def _directory(self, directory: str, build: bool = False) -> Iterator[libvirt.virStoragePool]:
        """A storage pool over a directory of this host: an existing pool, or a
        transient one made for the block (``build``: create the directory). How
        kvmweb reaches per-host files (NVRAM, TPM state) with nothing but libvirt."""
        directory = directory.rstrip("/")
        for pool in self.call(self._conn.listAllStoragePools, libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
            if text(ET.fromstring(self.call(pool.XMLDesc, 0)), "target/path").rstrip("/") == directory:
                self.call(pool.refresh, 0)
                yield pool
                return
        name = f"kvmweb-{uuidlib.uuid4().hex[:12]}"
        xml = f"<pool type='dir'><name>{name}</name><target><path>{_xml_escape(directory)}</path></target></pool>"
        flags = libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD if build else 0
        pool = self.call(self._conn.storagePoolCreateXML, xml, flags)
        try:
            yield pool
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                pool.destroy()

    def read_files(self, directory: str, names: Iterable[str] | None = None) -> dict[str, FileCopy]:
        """{name: (data, permissions XML)} of the files in a directory of this host
        (only ``names`` if given; hidden files never). {} if the directory does not exist."""
        wanted = set(names) if names is not None else None
        files = {}
        try:
            with self._directory(directory) as pool:
                for vol in self.call(pool.listAllVolumes, 0):
                    name = vol.name()
                    if name.startswith(".") or (wanted is not None and name not in wanted):
                        continue
                    perms = ET.fromstring(self.call(vol.XMLDesc, 0)).find("target/permissions")
                    data = b"".join(v if isinstance(v, bytes) else bytes(v) for _k, v in self.read_volume(vol.path()))
                    files[name] = (data, ET.tostring(perms, encoding="unicode") if perms is not None else "")
        except HostError as e:
            if "No such file or directory" in (e.detail or ""):
                return {}
            raise
        return files

    def write_files(self, directory: str, files: dict[str, FileCopy]) -> list[str]:
        """Write files read with read_files into a directory of this host, creating it; returns their paths."""
        paths = []
        with self._directory(directory, build=True) as pool:
            existing = {v.name(): v for v in self.call(pool.listAllVolumes, 0)}
            for name, (data, perms) in files.items():
                if name in existing:
                    # Left by an earlier move of the VM (libvirt keeps the NVRAM file of a VM
                    # that migrated away live); the VM is not defined here, or the checks
                    # would have refused the move.
                    self.call(existing[name].delete, 0)
                xml = (
                    f"<volume><name>{_xml_escape(name)}</name><capacity unit='bytes'>{len(data)}</capacity>"
                    f"<allocation unit='bytes'>0</allocation><target><format type='raw'/>{perms}</target></volume>"
                )
                path = self.call(pool.createXML, xml, 0).path()
                paths.append(path)
                self.write_volume(path, [("data", data)])
        return paths

    def snapshots_xml(self, uuid: object) -> tuple[list[str], str]:
        """The domain's snapshots' definitions, parents first, and the current one's name."""
        dom = self._dom(uuid)
        snaps = self.call(dom.listAllSnapshots, libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)
        current = next((s.getName() for s in snaps if s.isCurrent()), "")
        return [self.call(s.getXMLDesc, libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE) for s in snaps], current

    def redefine_snapshots(self, uuid: object, xmls: list[str], current: str = "") -> None:
        """Give the domain here the snapshots of another host (their metadata; the data is in the disks)."""
        dom = self._dom(uuid)
        for xml in xmls:
            flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
            if text(ET.fromstring(xml), "name") == current:
                flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
            self.call(dom.snapshotCreateXML, xml, flags)
