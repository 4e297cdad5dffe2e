"""Plain data the seam hands to the rest of kvmweb, and the names it gives to
libvirt's numbers. Never a virDomain or virConnect object; no libvirt binding."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

# Pool types whose storage is reachable from several hosts by construction.
SHARED_POOL_TYPES = {"netfs", "gluster", "rbd", "sheepdog", "iscsi", "iscsi-direct", "vstorage"}


class DomainState(enum.StrEnum):
    """A domain's state as the seam names it (libvirt's VIR_DOMAIN_* states)."""

    NOSTATE = "nostate"
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    PMSUSPENDED = "pmsuspended"
    # Not libvirt's: the host did not answer, so where the domain is cannot be known.
    UNKNOWN = "unknown"


# MigrationOps.postcopy_state's answers (besides "" and None).
POSTCOPY_FAILED = "failed"
POSTCOPY_ACTIVE = "active"


class CpuComparison(enum.StrEnum):
    """libvirt's verdict comparing a CPU with a host's (VIR_CPU_COMPARE_*)."""

    ERROR = "error"
    INCOMPATIBLE = "incompatible"
    IDENTICAL = "identical"
    SUPERSET = "superset"


@dataclass
class HostInfo:
    hostname: str
    libvirt_version: str
    hypervisor_type: str
    hypervisor_version: str
    cpu_arch: str
    cpu_vendor: str
    cpu_model: str
    cpu_count: int
    memory_total: int  # bytes
    memory_free: int  # bytes
    host_uuid: str = ""
    cpu_xml: str = ""
    # Huge pages the host has set aside, by page size: {"2048": pages} (KiB, as text for JSON).
    hugepages: dict[str, int] = field(default_factory=dict)


@dataclass
class PoolInfo:
    name: str
    uuid: str
    type: str
    target_path: str
    capacity: int
    allocation: int
    available: int
    active: bool
    shared: bool
    # Read with the inventory: each volume as {"name", "path", "capacity", "allocation"}.
    volumes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class NetworkInfo:
    name: str
    uuid: str
    bridge: str
    forward_mode: str
    active: bool


@dataclass
class DiskInfo:
    target: str
    device: str
    path: str
    format: str
    capacity: int | None
    allocation: int | None
    pool: str


@dataclass
class InterfaceInfo:
    type: str
    mac: str
    bridge: str
    network: str
    model: str


@dataclass
class DomainInfo:
    name: str
    uuid: str
    state: DomainState
    memory: int  # bytes, what it has now (<currentMemory>)
    vcpus: int
    persistent: bool
    autostart: bool
    disks: list[DiskInfo] = field(default_factory=list)
    interfaces: list[InterfaceInfo] = field(default_factory=list)
    max_memory: int = 0  # bytes, the most it may use (<memory>): what a host must be able to give it
    hugepage_kib: int = 0  # the size of the huge pages backing its memory; 0: none

    def movable_disks(self) -> list[DiskInfo]:
        """The disks a migration moves: disk devices backed by a file or volume
        (not CD-ROMs or floppies, not empty drives)."""
        return [d for d in self.disks if d.device == "disk" and d.path]


@dataclass
class Inventory:
    host: HostInfo
    pools: list[PoolInfo]
    networks: list[NetworkInfo]
    domains: list[DomainInfo]
    # time.time() when the read began: what was stored after it (an event) is newer than this read.
    read_at: float = 0.0


@dataclass
class DomainDetails:
    info: DomainInfo
    active: bool
    arch: str
    machine: str
    virt_type: str
    cpu_mode: str  # "", custom, host-model, host-passthrough, maximum
    cpu_xml: str
    job_active: bool = False


@dataclass
class JobStats:
    """libvirt's job statistics, in bytes and milliseconds."""

    active: bool
    elapsed_ms: int = 0
    data_total: int = 0
    data_processed: int = 0
    data_remaining: int = 0
    memory_total: int = 0
    memory_processed: int = 0
    memory_remaining: int = 0
    memory_bps: int = 0
    dirty_rate_bps: int = 0
    iteration: int = 0
    disk_total: int = 0
    disk_processed: int = 0
    disk_remaining: int = 0
    disk_bps: int = 0
    downtime_ms: int | None = None
    setup_ms: int | None = None
    throttle_percent: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_libvirt(cls, raw: dict[str, Any], active: bool) -> JobStats:
        """From the dict virDomainGetJobStats returns (its typed-parameter names)."""
        page = raw.get("memory_page_size", 4096) or 4096
        return cls(
            active=active,
            elapsed_ms=raw.get("time_elapsed", 0),
            data_total=raw.get("data_total", 0),
            data_processed=raw.get("data_processed", 0),
            data_remaining=raw.get("data_remaining", 0),
            memory_total=raw.get("memory_total", 0),
            memory_processed=raw.get("memory_processed", 0),
            memory_remaining=raw.get("memory_remaining", 0),
            memory_bps=raw.get("memory_bps", 0),
            dirty_rate_bps=raw.get("memory_dirty_rate", 0) * page,
            iteration=raw.get("memory_iteration", 0),
            disk_total=raw.get("disk_total", 0),
            disk_processed=raw.get("disk_processed", 0),
            disk_remaining=raw.get("disk_remaining", 0),
            disk_bps=raw.get("disk_bps", 0),
            downtime_ms=raw.get("downtime"),
            setup_ms=raw.get("setup_time"),
            throttle_percent=raw.get("auto_converge_throttle"),
            raw={k: v for k, v in raw.items() if isinstance(v, int | float)},
        )
