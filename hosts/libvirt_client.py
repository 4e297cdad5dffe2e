"""The one seam between kvmweb and libvirt.

This is the only module that imports ``libvirt``. It opens a connection per
piece of work and closes it afterwards, refuses to wait on an unreachable host
for longer than a timeout, turns every libvirt error into a ``HostError`` that
says in plain words what is wrong and what to do (keeping libvirt's own text
beside it), and hands plain dataclasses to the rest of the code, never
``virDomain`` or ``virConnect`` objects.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import libvirt

# libvirt prints every error to stderr unless a handler is registered; the
# errors reach the caller as exceptions anyway.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

DEFAULT_PORTS = {"tcp": 16509, "tls": 16514, "ssh": 22, "libssh": 22, "libssh2": 22}
KNOWN_DRIVERS = {"qemu", "test", "lxc", "xen", "libxl", "ch", "vbox", "bhyve"}
KNOWN_TRANSPORTS = {"tcp", "tls", "ssh", "libssh", "libssh2", "unix", "ext"}
# Pool types whose storage is reachable from several hosts by construction.
SHARED_POOL_TYPES = {"netfs", "gluster", "rbd", "sheepdog", "iscsi", "iscsi-direct", "vstorage"}


class HostError(Exception):
    """A libvirt operation failed.

    ``plain`` says what is wrong and what to do; ``detail`` is libvirt's own
    text. ``permanent`` is False when trying again later may succeed (the host
    was unreachable, the daemon restarting), True when it will not until
    someone changes something.
    """

    def __init__(self, plain, detail="", *, permanent=True, code=None):
        super().__init__(plain)
        self.plain = plain
        self.detail = detail
        self.permanent = permanent
        self.code = code

    def __str__(self):
        return self.plain


class HostUnreachable(HostError):
    def __init__(self, plain, detail=""):
        super().__init__(plain, detail, permanent=False, code="unreachable")


class InvalidURI(ValueError):
    """A libvirt URI that cannot be right, whatever the state of the network."""


def validate_uri(uri):
    """Check a libvirt URI's form and return it stripped; raise InvalidURI."""
    uri = (uri or "").strip()
    example = "Use a form like qemu+ssh://root@kvm02/system or qemu+tcp://10.0.0.2/system."
    if not uri:
        raise InvalidURI(f"The libvirt URI is empty. {example}")
    if any(c.isspace() for c in uri) or any(ord(c) < 32 for c in uri):
        raise InvalidURI(f"The libvirt URI must not contain spaces. {example}")
    if "://" not in uri:
        raise InvalidURI(f"'{uri}' is not a libvirt URI: it has no '://'. {example}")
    try:
        parts = urlsplit(uri)
    except ValueError as e:
        raise InvalidURI(f"'{uri}' cannot be parsed ({e}). {example}") from None
    try:
        port = parts.port
    except ValueError:
        raise InvalidURI(f"'{uri}' has an impossible port: ports go from 1 to 65535.") from None
    driver, _, transport = parts.scheme.partition("+")
    if driver not in KNOWN_DRIVERS:
        raise InvalidURI(
            f"'{parts.scheme}' is not a libvirt driver; KVM hosts use 'qemu' "
            f"(optionally with +ssh, +tcp or +tls). {example}"
        )
    if transport and transport not in KNOWN_TRANSPORTS:
        raise InvalidURI(f"'{transport}' is not a libvirt transport; use ssh, tcp, tls or unix. {example}")
    if transport in DEFAULT_PORTS and not parts.hostname:
        # The article's "Unable to parse URI qemu+ssh://": a remote transport
        # with no host to go to.
        raise InvalidURI(f"'{uri}' names the {transport} transport but no host. {example}")
    if port is not None and not 0 < port < 65536:
        raise InvalidURI(f"'{uri}' has an impossible port {port}.")
    if driver == "qemu" and parts.path not in ("/system", "/session"):
        raise InvalidURI(f"A qemu URI ends in /system (or /session), not '{parts.path or '(nothing)'}'. {example}")
    if driver == "test" and not parts.path:
        raise InvalidURI("A test URI names a file or /default, as in test:///default.")
    return uri


def _target(uri):
    """(host, port) to probe before connecting, or None for local transports."""
    parts = urlsplit(uri)
    transport = parts.scheme.partition("+")[2]
    if not parts.hostname:
        return None
    if not transport:
        transport = "tls"  # libvirt's default for a remote URI without a transport
    if transport not in DEFAULT_PORTS:
        return None
    return parts.hostname, parts.port or DEFAULT_PORTS[transport]


def _probe(uri, timeout):
    """Fail fast when a remote host does not answer at all.

    libvirt.open() has no timeout of its own: against a host that drops
    packets it waits for the kernel's TCP timeout, minutes, which would hang
    a web request. One TCP connect with a deadline tells the same thing in
    seconds.
    """
    target = _target(uri)
    if target is None:
        return
    host, port = target
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise HostUnreachable(
            f"The host name '{host}' does not resolve. Check the URI, DNS or /etc/hosts on the machine running kvmweb.",
            str(e),
        ) from None
    last = None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as s:
            s.settimeout(timeout)
            try:
                s.connect(address)
                return
            except OSError as e:
                last = e
    if isinstance(last, TimeoutError | socket.timeout):
        plain = (
            f"{host} did not answer on port {port} within {timeout:g} s. Check that the host "
            "is up and that no firewall drops the connection."
        )
    else:
        plain = (
            f"Nothing accepts connections on {host} port {port}. Check that libvirtd is "
            "running and listening there (for qemu+tcp, listen_tcp = 1 and libvirtd --listen "
            "or the libvirtd-tcp socket)."
        )
    raise HostUnreachable(plain, str(last))


def translate(error, uri=""):
    """Turn a libvirt.libvirtError into a HostError with a plain-words message."""
    if isinstance(error, HostError):
        return error
    detail = error.get_error_message() or str(error)
    code = error.get_error_code()
    lower = detail.lower()
    where = f" ({uri})" if uri else ""

    if "resolved to localhost" in lower or "requires an fqdn" in lower:
        return HostError(
            "The target host's name resolves to localhost, so the source cannot reach it "
            "for the migration. Give each host a name that resolves to its real address "
            "on both hosts (/etc/hosts or DNS).",
            detail,
            code="fqdn",
        )
    if "unable to parse uri" in lower or code == libvirt.VIR_ERR_INVALID_ARG and "uri" in lower:
        return HostError(
            f"libvirt cannot parse the URI{where}. Use a form like qemu+ssh://root@kvm02/system.",
            detail,
            code="uri",
        )
    if code in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC) and (
        "connect" in lower
        or "no route to host" in lower
        or "connection refused" in lower
        or "unable to connect" in lower
    ):
        return HostUnreachable(
            f"The host{where} cannot be reached: {_reach_hint(lower)}",
            detail,
        )
    if code == libvirt.VIR_ERR_AUTH_FAILED or "authentication" in lower or "permission denied" in lower:
        return HostError(
            f"The host{where} refused kvmweb's login. For qemu+ssh, install kvmweb's SSH key "
            "for that user on the host; for qemu+tls, check the client certificate.",
            detail,
            code="auth",
        )
    if "input/output error" in lower or (
        ("no such file or directory" in lower or "cannot access storage file" in lower) and "/" in detail
    ):
        return HostError(
            "A disk image cannot be read on the host. The storage is probably not mounted "
            "there: mount it (and check it is the same share on both hosts), then try again.",
            detail,
            code="storage",
        )
    if code == libvirt.VIR_ERR_OPERATION_INVALID and "not running" in lower:
        return HostError(
            "The virtual machine is not running, so it cannot be migrated live. Start it, or use a cold migration.",
            detail,
            code="not_running",
        )
    if code in (libvirt.VIR_ERR_NO_DOMAIN,):
        return HostError(
            "The virtual machine does not exist on that host (any more). Refresh the inventory.",
            detail,
            code="no_domain",
        )
    return HostError(f"libvirt reported an error{where}: {detail}", detail, code=str(code))


def _reach_hint(lower):
    if "ssh" in lower:
        return (
            "logging in over SSH failed. Check that sshd runs there and that the SSH key of the "
            "user running kvmweb is installed for that user on the host (the article's "
            "'secret-free login'); for a migration, the source host needs the same to the target."
        )
    if re.search(r":49(1[5-9]\d|2[01]\d)\b", lower):
        return (
            "the source could not open the migration data connection to the target (ports "
            "49152-49215). Open those ports on the target's firewall, and check the route between "
            "the hosts."
        )
    if "no route to host" in lower:
        return (
            "there is no route to it. Check the network, and that the host name resolves to "
            "the right address on both hosts."
        )
    if "connection refused" in lower:
        return "it refused the connection. Check that libvirtd is running and listening."
    if "timed out" in lower:
        return "it did not answer in time. Check that it is up."
    return "check that it is up, that libvirtd runs there, and the network between them."


# ---------------------------------------------------------------------------
# Plain data returned to the rest of kvmweb


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
    hugepages: dict = field(default_factory=dict)


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
    state: str
    state_reason: int
    memory: int  # bytes, what it has now (<currentMemory>)
    vcpus: int
    persistent: bool
    autostart: bool
    disks: list[DiskInfo] = field(default_factory=list)
    interfaces: list[InterfaceInfo] = field(default_factory=list)
    max_memory: int = 0  # bytes, the most it may use (<memory>): what a host must be able to give it
    hugepage_kib: int = 0  # the size of the huge pages backing its memory; 0: none


@dataclass
class Inventory:
    host: HostInfo
    pools: list[PoolInfo]
    networks: list[NetworkInfo]
    domains: list[DomainInfo]


DOMAIN_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}

POOL_TYPES = {
    "dir",
    "fs",
    "netfs",
    "logical",
    "disk",
    "iscsi",
    "iscsi-direct",
    "scsi",
    "mpath",
    "rbd",
    "sheepdog",
    "gluster",
    "zfs",
    "vstorage",
}


def _version(number):
    major, rest = divmod(number, 1_000_000)
    minor, micro = divmod(rest, 1000)
    return f"{major}.{minor}.{micro}"


def _text(node, path, default=""):
    found = node.find(path)
    return found.text if found is not None and found.text is not None else default


_UNIT_KIB = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "m": 1024, "mib": 1024, "g": 1024**2, "gib": 1024**2}


def _to_kib(value, unit):
    """A libvirt memory figure in KiB. libvirt writes KiB in the XML it returns;
    other binary units are understood in case it does not."""
    return int(int(value) * _UNIT_KIB.get((unit or "KiB").lower(), 1))


def _kib(node, default=0):
    if node is None or not (node.text or "").strip():
        return default
    return _to_kib(node.text, node.get("unit"))


def _hugepages(caps):
    """Huge pages per size over all NUMA cells, from the capabilities: {"2048": pages}.

    The smallest page size listed is the normal page, not a huge one."""
    sizes = [_to_kib(p.get("size", 0), p.get("unit")) for p in caps.iterfind("host/cpu/pages")]
    normal = min(sizes, default=4)
    pages = {}
    for p in caps.iterfind("host/topology/cells/cell/pages"):
        size = _to_kib(p.get("size", 0), p.get("unit"))
        if size > normal and (p.text or "").strip():
            pages[str(size)] = pages.get(str(size), 0) + int(p.text)
    return {size: count for size, count in pages.items() if count}


# Linux's huge page size when a guest asks for huge pages without naming one
# (x86-64 and arm64 with 4 KiB pages).
DEFAULT_HUGEPAGE_KIB = 2048


def _hugepage_kib(root):
    backing = root.find("memoryBacking/hugepages")
    if backing is None:
        return 0
    sizes = [_to_kib(p.get("size", 0), p.get("unit")) for p in backing.iterfind("page")]
    return max(sizes) if sizes else DEFAULT_HUGEPAGE_KIB


# ---------------------------------------------------------------------------
# Connections


class InventoryOps:
    """The read-only half of a Connection: what inventory sync asks."""

    def __init__(self, uri, conn):
        self.uri = uri
        self._conn = conn

    def call(self, fn, *args):
        try:
            return fn(*args)
        except libvirt.libvirtError as e:
            raise translate(e, self.uri) from None

    # -- inventory ---------------------------------------------------------

    def host_info(self):
        c = self._conn
        try:
            caps = ET.fromstring(c.getCapabilities())
            model, memory_mib, cpus, *_ = c.getInfo()
            cpu = caps.find("host/cpu")
            return HostInfo(
                hostname=c.getHostname(),
                libvirt_version=_version(c.getLibVersion()),
                hypervisor_type=c.getType(),
                hypervisor_version=_version(c.getVersion()),
                cpu_arch=_text(cpu, "arch", model) if cpu is not None else model,
                cpu_vendor=_text(cpu, "vendor") if cpu is not None else "",
                cpu_model=_text(cpu, "model") if cpu is not None else "",
                cpu_count=cpus,
                **self._memory(memory_mib * 1024 * 1024),
                host_uuid=_text(caps, "host/uuid"),
                cpu_xml=ET.tostring(cpu, encoding="unicode") if cpu is not None else "",
                hugepages=_hugepages(caps),
            )
        except libvirt.libvirtError as e:
            raise translate(e, self.uri) from None

    def _memory(self, fallback_total):
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

    def pools(self, with_volumes=False):
        """Storage pools, and with_volumes a {path: (pool, capacity, allocation)} map."""
        volumes = {}
        pools = []
        try:
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
                        target_path=_text(root, "target/path"),
                        capacity=capacity,
                        allocation=allocation,
                        available=available,
                        active=active,
                        shared=ptype in SHARED_POOL_TYPES,
                    )
                )
                if with_volumes and active:
                    for vol in pool.listAllVolumes():
                        _t, vcap, valloc = vol.info()
                        volumes[vol.path()] = (pool.name(), vcap, valloc)
        except libvirt.libvirtError as e:
            raise translate(e, self.uri) from None
        return pools, volumes

    def networks(self):
        result = []
        try:
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
        except libvirt.libvirtError as e:
            raise translate(e, self.uri) from None
        return result

    def domains(self, volumes=None):
        volumes = volumes or {}
        result = []
        try:
            for dom in self._conn.listAllDomains():
                result.append(self._domain_info(dom, volumes))
        except libvirt.libvirtError as e:
            raise translate(e, self.uri) from None
        return result

    def _domain_info(self, dom, volumes):
        root = ET.fromstring(dom.XMLDesc())
        state, reason = dom.state()
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
                    pool_name = source.get("pool")
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
            state=DOMAIN_STATES.get(state, "nostate"),
            state_reason=reason,
            memory=memory_kib * 1024,
            max_memory=max(max_kib, memory_kib) * 1024,
            hugepage_kib=_hugepage_kib(root),
            vcpus=int(_text(root, "vcpu", "1")),
            persistent=bool(dom.isPersistent()),
            autostart=bool(dom.autostart()) if dom.isPersistent() else False,
            disks=disks,
            interfaces=interfaces,
        )

    def inventory(self):
        pools, volumes = self.pools(with_volumes=True)
        return Inventory(
            host=self.host_info(),
            pools=pools,
            networks=self.networks(),
            domains=self.domains(volumes),
        )

    def close(self):
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.close()


_loop_lock = threading.Lock()
_loop_pid = None


def _ensure_event_loop():
    """Run libvirt's event loop in this process, so keepalive works.

    Without a running event loop libvirt sends no keepalives, and a call on a
    connection whose host vanished blocks until the kernel gives up on the
    TCP connection, a quarter of an hour later. RQ forks a work horse per
    job and threads do not survive a fork, hence the check of the pid.
    """
    global _loop_pid
    if _loop_pid == os.getpid():
        return
    with _loop_lock:
        if _loop_pid == os.getpid():
            return
        if _loop_pid is None:
            libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True).start()
        _loop_pid = os.getpid()


def _run_event_loop():
    while True:
        libvirt.virEventRunDefaultImpl()


def reachable(uri, timeout=2.0):
    """Whether a host's libvirtd accepts TCP connections now (True for local URIs)."""
    try:
        _probe(uri, timeout)
        return True
    except HostUnreachable:
        return False


def _open(uri, timeout):
    """libvirt.open with a deadline.

    The TCP probe catches hosts that do not answer at all; the thread catches
    the rarer case of a host that accepts the connection and then stalls
    (a hung libvirtd). A stalled open is abandoned, not killed: its thread
    finishes or times out on its own.
    """
    _ensure_event_loop()
    _probe(uri, timeout)
    result = {}

    def target():
        try:
            result["conn"] = libvirt.open(uri)
        except libvirt.libvirtError as e:
            result["error"] = e

    thread = threading.Thread(target=target, name=f"libvirt-open {uri}", daemon=True)
    thread.start()
    thread.join(timeout * 2)
    if thread.is_alive():
        raise HostUnreachable(
            f"libvirtd at {uri} accepted the connection but did not answer within "
            f"{timeout * 2:g} s. It may be overloaded or hung: check it on the host.",
        )
    if "error" in result:
        raise translate(result["error"], uri)
    conn = result["conn"]
    if _target(uri) is not None:
        # Notice a host that disappears in the middle of a long operation.
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(5, 3)
    return conn


@contextlib.contextmanager
def open_host(uri, timeout=None):
    """Open a connection to one host for the length of a ``with`` block."""
    if timeout is None:
        from django.conf import settings

        timeout = settings.KVMWEB_CONNECT_TIMEOUT
    connection = Connection(uri, _open(uri, timeout))
    try:
        yield connection
    finally:
        connection.close()


# ---------------------------------------------------------------------------
# Migration: what the engine asks of a host. Still plain data in and out.


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
    raw: dict = field(default_factory=dict)


def _job_stats(raw, active):
    page = raw.get("memory_page_size", 4096) or 4096
    return JobStats(
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


FLAG_NAMES = {
    "live": libvirt.VIR_MIGRATE_LIVE,
    "peer2peer": libvirt.VIR_MIGRATE_PEER2PEER,
    "persist_dest": libvirt.VIR_MIGRATE_PERSIST_DEST,
    "undefine_source": libvirt.VIR_MIGRATE_UNDEFINE_SOURCE,
    "non_shared_disk": libvirt.VIR_MIGRATE_NON_SHARED_DISK,
    "auto_converge": libvirt.VIR_MIGRATE_AUTO_CONVERGE,
    "postcopy": libvirt.VIR_MIGRATE_POSTCOPY,
    "abort_on_error": libvirt.VIR_MIGRATE_ABORT_ON_ERROR,
}


def migration_flags(names):
    """The libvirt flag word for a list of flag names (kept as names in the record)."""
    value = 0
    for name in names:
        value |= FLAG_NAMES[name]
    return value


class VolumeStreamError(HostError):
    pass


def _domain_cpu(root):
    cpu = root.find("cpu")
    if cpu is None:
        return "", ""
    return cpu.get("mode", "custom"), ET.tostring(cpu, encoding="unicode")


class MigrationOps:
    """Mixed into Connection: the operations a migration needs."""

    def _dom(self, uuid):
        return self.call(self._conn.lookupByUUIDString, str(uuid))

    def find_domain(self, uuid=None, name=None):
        """(uuid found, name found) without raising for absent domains."""
        by_uuid = by_name = False
        for dom in self.call(self._conn.listAllDomains):
            by_uuid = by_uuid or (uuid is not None and dom.UUIDString() == str(uuid))
            by_name = by_name or (name is not None and dom.name() == name)
        return by_uuid, by_name

    def domain_details(self, uuid):
        try:
            dom = self._conn.lookupByUUIDString(str(uuid))
            root = ET.fromstring(dom.XMLDesc())
            _pools, volumes = self.pools(with_volumes=True)
            info = self._domain_info(dom, volumes)
            ostype = root.find("os/type")
            mode, cpu_xml = _domain_cpu(root)
            job_active = False
            if dom.isActive():
                job_active = dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE
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
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise translate(e, self.uri) from None

    def guest_arches(self, virt_type):
        caps = ET.fromstring(self.call(self._conn.getCapabilities))
        arches = set()
        for guest in caps.iterfind("guest"):
            arch = guest.find("arch")
            if arch is None:
                continue
            domains = {d.get("type") for d in arch.iterfind("domain")}
            if not virt_type or virt_type in domains:
                arches.add(arch.get("name"))
        return arches

    def cpu_features(self, cpu_xml):
        """Every feature of a host CPU description, its model's included."""
        expanded = self.call(self._conn.baselineCPU, [cpu_xml], libvirt.VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES)
        root = ET.fromstring(expanded)
        return {f.get("name") for f in root.iterfind("feature") if f.get("policy", "require") in ("require", "force")}

    def compare_guest_cpu(self, cpu_xml, arch, machine, virt_type):
        """libvirt's verdict on whether this host's hypervisor can run that guest CPU.

        Returns (compatible, detail)."""
        try:
            result = self._conn.compareHypervisorCPU(None, arch or None, machine or None, virt_type or None, cpu_xml, 0)
        except libvirt.libvirtError as e:
            return False, e.get_error_message() or str(e)
        if result == libvirt.VIR_CPU_COMPARE_INCOMPATIBLE:
            return False, "libvirt: the host CPU is incompatible with the guest CPU"
        return True, {1: "identical", 2: "superset"}.get(result, str(result))

    def compare_host_cpu(self, cpu_xml):
        """Compare another host's CPU with this one (for host-passthrough guests)."""
        try:
            result = self._conn.compareCPU(cpu_xml, 0)
        except libvirt.libvirtError as e:
            return False, e.get_error_message() or str(e)
        return result != libvirt.VIR_CPU_COMPARE_INCOMPATIBLE, str(result)

    def has_bridge(self, name):
        try:
            return any(i.name() == name for i in self._conn.listAllInterfaces())
        except libvirt.libvirtError:
            return None  # this libvirt cannot list host interfaces

    def network_state(self, name):
        """'active', 'inactive' or None when the libvirt network does not exist."""
        for net in self.call(self._conn.listAllNetworks):
            if net.name() == name:
                return "active" if net.isActive() else "inactive"
        return None

    def free_memory(self):
        try:
            return self._memory(0)["memory_free"]
        except libvirt.libvirtError as e:
            raise translate(e, self.uri) from None

    def hostname(self):
        return self.call(self._conn.getHostname)

    # -- storage -----------------------------------------------------------

    def volume_by_path(self, path, refresh=True):
        """(pool name, capacity, allocation, format) of the volume at path, or None."""
        try:
            if refresh:
                for pool in self._conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
                    with contextlib.suppress(libvirt.libvirtError):
                        pool.refresh(0)
            vol = self._conn.storageVolLookupByPath(path)
            _t, capacity, allocation = vol.info()
            fmt = ET.fromstring(vol.XMLDesc()).find("target/format")
            return (
                vol.storagePoolLookupByVolume().name(),
                capacity,
                allocation,
                fmt.get("type") if fmt is not None else "raw",
            )
        except libvirt.libvirtError as e:
            if e.get_error_code() in (libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_NO_STORAGE_POOL):
                return None
            raise translate(e, self.uri) from None

    def pool(self, name):
        pools, _ = self.pools()
        return next((p for p in pools if p.name == name), None)

    def create_volume(self, pool_name, name, capacity, fmt):
        pool = self.call(self._conn.storagePoolLookupByName, pool_name)
        xml = (
            f"<volume><name>{_xml_escape(name)}</name><capacity unit='bytes'>{int(capacity)}</capacity>"
            f"<allocation unit='bytes'>0</allocation>"
            f"<target><format type='{_xml_escape(fmt or 'raw')}'/></target></volume>"
        )
        vol = self.call(pool.createXML, xml, 0)
        return vol.path()

    def delete_volume(self, path):
        try:
            self._conn.storageVolLookupByPath(path).delete(0)
            return True
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return False
            raise translate(e, self.uri) from None

    def read_volume(self, path, chunk=4 * 1024 * 1024):
        """Yield ('data', bytes) and ('hole', length) pieces of a volume, sparsely.

        Holes are not sent over the network, so an image that is mostly empty
        costs only its data to copy (the article's scp sends every byte)."""
        vol = self.call(self._conn.storageVolLookupByPath, path)
        stream = self._conn.newStream(0)
        try:
            self.call(vol.download, stream, 0, 0, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
            while True:
                got = self.call(stream.recvFlags, chunk, libvirt.VIR_STREAM_RECV_STOP_AT_HOLE)
                if got == -3:  # a hole comes next
                    length = self.call(stream.recvHole, 0)
                    if length:
                        yield ("hole", length)
                    continue
                if isinstance(got, int):
                    if got == -2:
                        continue
                    raise VolumeStreamError(f"Reading {path} failed ({got}).")
                if not got:
                    break
                yield ("data", got)
            self.call(stream.finish)
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise

    def write_volume(self, path, pieces):
        """Write ('data', bytes) / ('hole', length) pieces into a volume, sparsely."""
        vol = self.call(self._conn.storageVolLookupByPath, path)
        stream = self._conn.newStream(0)
        try:
            self.call(vol.upload, stream, 0, 0, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
            for kind, value in pieces:
                if kind == "hole":
                    self.call(stream.sendHole, value, 0)
                else:
                    view = memoryview(value)
                    while view:
                        sent = self.call(stream.send, view.tobytes())
                        if sent < 0:
                            raise VolumeStreamError(f"Writing {path} failed ({sent}).")
                        view = view[sent:]
            self.call(stream.finish)
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise

    # -- domains -----------------------------------------------------------

    def domain_xml(self, uuid, inactive=True):
        """The definition to recreate the domain elsewhere. Secure: it may hold
        passwords (VNC, SPICE), so it is never logged or audited."""
        flags = libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE
        if inactive:
            flags |= libvirt.VIR_DOMAIN_XML_INACTIVE
        return self.call(self._dom(uuid).XMLDesc, flags)

    def define(self, xml):
        return self.call(self._conn.defineXML, xml).UUIDString()

    def start(self, uuid):
        self.call(self._dom(uuid).create)

    def shutdown(self, uuid):
        self.call(self._dom(uuid).shutdown)

    def destroy(self, uuid):
        dom = self._dom(uuid)
        if dom.isActive():
            self.call(dom.destroy)

    def state(self, uuid):
        """The domain's state name, or None if it is not defined here."""
        try:
            state, _reason = self._conn.lookupByUUIDString(str(uuid)).state()
            return DOMAIN_STATES.get(state, "nostate")
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise translate(e, self.uri) from None

    def is_persistent(self, uuid):
        return bool(self.call(self._dom(uuid).isPersistent))

    def undefine(self, uuid):
        flags = (
            libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        )
        self.call(self._dom(uuid).undefineFlags, flags)

    # -- live migration ----------------------------------------------------

    def migrate(
        self,
        uuid,
        dest_uri,
        flag_names,
        *,
        migrate_uri=None,
        bandwidth_mib=None,
        disks=None,
        destination_xml=None,
        auto_converge=None,
    ):
        """Start a peer-to-peer migration and return when it ends (blocks)."""
        params = {}
        if migrate_uri:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = migrate_uri
        if bandwidth_mib:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(bandwidth_mib)
        if disks:
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(disks)
        if destination_xml:
            params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = destination_xml
            params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = destination_xml
        if auto_converge:
            initial, increment = auto_converge
            params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL] = initial
            params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT] = increment
        dom = self._dom(uuid)
        self.call(dom.migrateToURI3, dest_uri, params, migration_flags(flag_names))

    def job_stats(self, uuid, completed=False):
        try:
            dom = self._conn.lookupByUUIDString(str(uuid))
            raw = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED if completed else 0)
        except libvirt.libvirtError as e:
            if e.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
                return JobStats(active=False)
            raise translate(e, self.uri) from None
        active = raw.get("type", 0) not in (libvirt.VIR_DOMAIN_JOB_NONE,)
        if completed:
            active = False
        return _job_stats(raw, active)

    def abort_job(self, uuid):
        try:
            self._conn.lookupByUUIDString(str(uuid)).abortJob()
            return True
        except libvirt.libvirtError as e:
            if e.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
                return False
            raise translate(e, self.uri) from None

    def set_max_downtime(self, uuid, ms):
        self.call(self._dom(uuid).migrateSetMaxDowntime, int(ms), 0)

    def start_postcopy(self, uuid):
        self.call(self._dom(uuid).migrateStartPostCopy, 0)


def _xml_escape(value):
    from xml.sax.saxutils import quoteattr

    return quoteattr(str(value))[1:-1]


class Connection(InventoryOps, MigrationOps):
    """A libvirt connection for one piece of work. Use ``open_host``."""
