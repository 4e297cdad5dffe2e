"""The read-only part of a Connection: what inventory sync and the pre-flight
checks ask of a host."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import libvirt

from .base import Ops, domain_state, text
from .errors import translated
from .types import (
    SHARED_POOL_TYPES,
    CpuComparison,
    DiskInfo,
    DomainDetails,
    DomainInfo,
    HostInfo,
    InterfaceInfo,
    Inventory,
    NetworkInfo,
    PoolInfo,
)

# {volume path: (pool name, capacity, allocation)}
Volumes = dict[str, tuple[str, int, int]]

CPU_COMPARISONS = {
    libvirt.VIR_CPU_COMPARE_ERROR: CpuComparison.ERROR,
    libvirt.VIR_CPU_COMPARE_INCOMPATIBLE: CpuComparison.INCOMPATIBLE,
    libvirt.VIR_CPU_COMPARE_IDENTICAL: CpuComparison.IDENTICAL,
    libvirt.VIR_CPU_COMPARE_SUPERSET: CpuComparison.SUPERSET,
}


def _version(number: int) -> str:
    major, rest = divmod(number, 1_000_000)
    minor, micro = divmod(rest, 1000)
    return f"{major}.{minor}.{micro}"


_UNIT_KIB = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "m": 1024, "mib": 1024, "g": 1024**2, "gib": 1024**2}

# Linux's huge page size when a guest asks for huge pages without naming one
# (x86-64 and arm64 with 4 KiB pages).
DEFAULT_HUGEPAGE_KIB = 2048


def _to_kib(value: str | int, unit: str | None) -> int:
    """A libvirt memory figure in KiB. libvirt writes KiB in the XML it returns;
    other binary units are understood in case it does not."""
    return int(int(value) * _UNIT_KIB.get((unit or "KiB").lower(), 1))


def _kib(node: ET.Element | None, default: int = 0) -> int:
    if node is None or not (node.text or "").strip():
        return default
    return _to_kib(node.text or "0", node.get("unit"))


def _hugepages(caps: ET.Element) -> dict[str, int]:
    """Huge pages per size over all NUMA cells, from the capabilities: {"2048": pages}.

    Each cell lists its normal pages first, as its smallest size: not huge ones."""
    pages: dict[str, int] = {}
    for cell in caps.iterfind("host/topology/cells/cell"):
        sizes = [(_to_kib(p.get("size", 0), p.get("unit")), int(p.text or 0)) for p in cell.iterfind("pages")]
        normal = min((size for size, _ in sizes), default=0)
        for size, count in sizes:
            if size > normal and count:
                pages[str(size)] = pages.get(str(size), 0) + count
    return pages


def _hugepage_kib(root: ET.Element) -> int:
    backing = root.find("memoryBacking/hugepages")
    if backing is None:
        return 0
    sizes = [_to_kib(p.get("size", 0), p.get("unit")) for p in backing.iterfind("page")]
    return max(sizes) if sizes else DEFAULT_HUGEPAGE_KIB


def _domain_cpu(root: ET.Element) -> tuple[str, str]:
    cpu = root.find("cpu")
    if cpu is None:
        return "", ""
    return cpu.get("mode", "custom"), ET.tostring(cpu, encoding="unicode")


class InventoryOps(Ops):
    @translated
    def host_info(self) -> HostInfo:
        c = self._conn
        caps = ET.fromstring(c.getCapabilities())
        model, memory_mib, cpus, *_ = c.getInfo()
        cpu = caps.find("host/cpu")
        return HostInfo(
            hostname=c.getHostname(),
            libvirt_version=_version(c.getLibVersion()),
            hypervisor_type=c.getType(),
            hypervisor_version=_version(c.getVersion()),
            cpu_arch=text(cpu, "arch", model) if cpu is not None else model,
            cpu_vendor=text(cpu, "vendor"),
            cpu_model=text(cpu, "model"),
            cpu_count=cpus,
            **self._memory(memory_mib * 1024 * 1024),
            host_uuid=text(caps, "host/uuid"),
            cpu_xml=ET.tostring(cpu, encoding="unicode") if cpu is not None else "",
            hugepages=_hugepages(caps),
        )

    def _memory(self, fallback_total: int) -> dict[str, int]:
        """Total and available memory in bytes, as the kernel counts them.

        virNodeGetFreeMemory and virNodeGetInfo read NUMA cell figures that
        can be far off (a 24 GiB machine reported 6.7 GiB total, 4.7 free);
        the node's memory statistics match /proc/meminfo. Page cache counts
        as available: the kernel gives it up for a guest."""
        try:
            stats = self._conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
            available = stats["free"] + stats.get("buffers", 0) + stats.get("cached", 0)
            return {"memory_total": stats["total"] * 1024, "memory_free": available * 1024}
        except (libvirt.libvirtError, KeyError):
            return {"memory_total": fallback_total, "memory_free": self._conn.getFreeMemory()}

    @translated
    def free_memory(self) -> int:
        return self._memory(0)["memory_free"]

    @translated
    def hostname(self) -> str:
        return str(self._conn.getHostname())

    @translated
    def pools(self, with_volumes: bool = False) -> tuple[list[PoolInfo], Volumes]:
        """Storage pools, and with_volumes a {path: (pool, capacity, allocation)} map."""
        volumes: Volumes = {}
        pools = []
        for pool in self._conn.listAllStoragePools():
            root = ET.fromstring(pool.XMLDesc())
            ptype = root.get("type", "")
            active = bool(pool.isActive())
            if active:
                _state, capacity, allocation, available = pool.info()
            else:
                capacity = allocation = available = 0
            pools.append(
                PoolInfo(
                    name=pool.name(),
                    uuid=pool.UUIDString(),
                    type=ptype,
                    target_path=text(root, "target/path"),
                    capacity=capacity,
                    allocation=allocation,
                    available=available,
                    active=active,
                    shared=ptype in SHARED_POOL_TYPES,
                )
            )
            if with_volumes and active:
                for vol in pool.listAllVolumes():
                    try:
                        _t, vcap, valloc = vol.info()
                    except libvirt.libvirtError as e:
                        if e.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                            continue  # deleted while being read (a pre-flight probe)
                        raise
                    volumes[vol.path()] = (pool.name(), vcap, valloc)
                    pools[-1].volumes.append(
                        {"name": vol.name(), "path": vol.path(), "capacity": vcap, "allocation": valloc}
                    )
        return pools, volumes

    def pool(self, name: str) -> PoolInfo | None:
        pools, _ = self.pools()
        return next((p for p in pools if p.name == name), None)

    @translated
    def networks(self) -> list[NetworkInfo]:
        result = []
        for net in self._conn.listAllNetworks():
            root = ET.fromstring(net.XMLDesc())
            bridge = root.find("bridge")
            forward = root.find("forward")
            result.append(
                NetworkInfo(
                    name=net.name(),
                    uuid=net.UUIDString(),
                    bridge=bridge.get("name", "") if bridge is not None else "",
                    forward_mode=forward.get("mode", "nat") if forward is not None else "isolated",
                    active=bool(net.isActive()),
                )
            )
        return result

    def network_state(self, name: str) -> str | None:
        """'active', 'inactive' or None when the libvirt network does not exist."""
        for net in self.call(self._conn.listAllNetworks):
            if net.name() == name:
                return "active" if net.isActive() else "inactive"
        return None

    def has_bridge(self, name: str) -> bool | None:
        """Whether the host has that interface; None when its libvirt cannot list them."""
        try:
            return any(i.name() == name for i in self._conn.listAllInterfaces())
        except libvirt.libvirtError:
            return None

    @translated
    def domains(self, volumes: Volumes | None = None) -> list[DomainInfo]:
        result = []
        for dom in self._conn.listAllDomains():
            try:
                result.append(self._domain_info(dom, volumes or {}))
            except libvirt.libvirtError as e:
                # Gone between the listing and the reading: it migrated away or
                # was undefined meanwhile. Not a reason to call the host down.
                if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
        return result

    def _domain_info(self, dom: libvirt.virDomain, volumes: Volumes) -> DomainInfo:
        root = ET.fromstring(dom.XMLDesc())
        state, _reason = dom.state()
        max_kib = _kib(root.find("memory"))
        memory_kib = _kib(root.find("currentMemory"), max_kib)
        disks = []
        for disk in root.iterfind("devices/disk"):
            source = disk.find("source")
            path = ""
            pool_name = ""
            if source is not None:
                path = source.get("file") or source.get("dev") or source.get("name") or ""
                if source.get("pool"):
                    pool_name = source.get("pool", "")
                    path = path or source.get("volume", "")
            driver = disk.find("driver")
            target = disk.find("target")
            known = volumes.get(path)
            disks.append(
                DiskInfo(
                    target=target.get("dev", "") if target is not None else "",
                    device=disk.get("device", "disk"),
                    path=path,
                    format=driver.get("type", "") if driver is not None else "",
                    capacity=known[1] if known else None,
                    allocation=known[2] if known else None,
                    pool=pool_name or (known[0] if known else ""),
                )
            )
        interfaces = []
        for nic in root.iterfind("devices/interface"):
            source = nic.find("source")
            mac = nic.find("mac")
            model = nic.find("model")
            interfaces.append(
                InterfaceInfo(
                    type=nic.get("type", ""),
                    mac=mac.get("address", "") if mac is not None else "",
                    bridge=source.get("bridge", "") if source is not None else "",
                    network=source.get("network", "") if source is not None else "",
                    model=model.get("type", "") if model is not None else "",
                )
            )
        return DomainInfo(
            name=dom.name(),
            uuid=dom.UUIDString(),
            state=domain_state(state),
            memory=memory_kib * 1024,
            max_memory=max(max_kib, memory_kib) * 1024,
            hugepage_kib=_hugepage_kib(root),
            vcpus=int(text(root, "vcpu", "1")),
            persistent=bool(dom.isPersistent()),
            autostart=bool(dom.autostart()) if dom.isPersistent() else False,
            disks=disks,
            interfaces=interfaces,
        )

    def inventory(self) -> Inventory:
        read_at = time.time()
        pools, volumes = self.pools(with_volumes=True)
        return Inventory(
            host=self.host_info(),
            pools=pools,
            networks=self.networks(),
            domains=self.domains(volumes),
            read_at=read_at,
        )

    @translated(absent=(libvirt.VIR_ERR_NO_DOMAIN,), default=None)
    def domain_details(self, uuid: object) -> DomainDetails | None:
        """What the checks and the engine need of one domain; None if it is not here."""
        dom = self._conn.lookupByUUIDString(str(uuid))
        root = ET.fromstring(dom.XMLDesc())
        _pools, volumes = self.pools(with_volumes=True)
        info = self._domain_info(dom, volumes)
        ostype = root.find("os/type")
        mode, cpu_xml = _domain_cpu(root)
        job_active = False
        if dom.isActive():
            try:
                job_active = dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                    raise
                # A driver that cannot report jobs (libvirt's test driver) runs none.
        return DomainDetails(
            info=info,
            active=bool(dom.isActive()),
            arch=ostype.get("arch", "") if ostype is not None else "",
            machine=ostype.get("machine", "") if ostype is not None else "",
            virt_type=root.get("type", ""),
            cpu_mode=mode,
            cpu_xml=cpu_xml,
            job_active=job_active,
        )

    def guest_arches(self, virt_type: str) -> set[str]:
        caps = ET.fromstring(self.call(self._conn.getCapabilities))
        arches = set()
        for guest in caps.iterfind("guest"):
            arch = guest.find("arch")
            if arch is None:
                continue
            domains = {d.get("type") for d in arch.iterfind("domain")}
            if not virt_type or virt_type in domains:
                arches.add(arch.get("name", ""))
        return arches

    def cpu_features(self, cpu_xml: str) -> set[str]:
        """Every feature of a host CPU description, its model's included."""
        expanded = self.call(self._conn.baselineCPU, [cpu_xml], libvirt.VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES)
        root = ET.fromstring(expanded)
        return {
            f.get("name", "") for f in root.iterfind("feature") if f.get("policy", "require") in ("require", "force")
        }

    def compare_guest_cpu(self, cpu_xml: str, arch: str, machine: str, virt_type: str) -> tuple[CpuComparison, str]:
        """libvirt's verdict on whether this host's hypervisor can run that guest CPU,
        and its words for it. A refusal to compare is an ERROR verdict, not a HostError."""
        try:
            result = self._conn.compareHypervisorCPU(None, arch or None, machine or None, virt_type or None, cpu_xml, 0)
        except libvirt.libvirtError as e:
            return CpuComparison.ERROR, e.get_error_message() or str(e)
        verdict = CPU_COMPARISONS.get(result, CpuComparison.ERROR)
        if verdict == CpuComparison.INCOMPATIBLE:
            return verdict, "libvirt: the host CPU is incompatible with the guest CPU"
        return verdict, verdict.value

    def compare_host_cpu(self, cpu_xml: str) -> tuple[CpuComparison, str]:
        """Compare another host's CPU with this one (for host-passthrough guests)."""
        try:
            result = self._conn.compareCPU(cpu_xml, 0)
        except libvirt.libvirtError as e:
            return CpuComparison.ERROR, e.get_error_message() or str(e)
        verdict = CPU_COMPARISONS.get(result, CpuComparison.ERROR)
        return verdict, verdict.value
