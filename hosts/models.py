from __future__ import annotations

import contextlib
import ipaddress
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from django.utils.functional import cached_property

from core.links import row_url

from . import figures, sshkeys
from .libvirt import HostError, InvalidURI, check_uri, validate_uri
from .libvirt.uri import remote_target
from .validators import validate_libvirt_uri

if TYPE_CHECKING:
    from .figures import Capacity
    from .libvirt import HostError, HostInfo, HostURI

SSH_TRANSPORTS = ("ssh", "libssh")
# The largest capacity settings accepted: 16 TiB kept for the host itself, ten
# times its memory promised, 64 vCPUs per CPU.
MAX_RESERVED_MIB = 16 * 1024 * 1024
MAX_MEMORY_RATIO = 10.0
MAX_CPU_RATIO = 64.0


class HostKeyRefused(ValueError):
    """An operator's confirmation of a host key that does not match."""


def _same_key(a: str, b: str) -> bool:
    return a.split()[:2] == b.split()[:2]


def write_known_hosts() -> None:
    """kvmweb's known_hosts: exactly the host keys operators confirmed, each
    through the one row that names its host and port (rows in any other key
    state are left out, and every open refuses them: Host.connect_uri)."""
    entries = []
    for host in Host.objects.exclude(ssh_host_key=""):
        parsed = host.parsed_uri()
        if parsed is not None and parsed.transport in SSH_TRANSPORTS and host.host_key_state == HostKeyState.TRUSTED:
            entries.append((parsed.host, parsed.port, host.ssh_host_key))
    sshkeys.write_known_hosts(entries)


def endpoint(uri: str) -> tuple[str, int | None] | None:
    """(host name in lower case, port) a URI connects to, or None (the test driver, a refused URI).

    known_hosts, and so the trust in a host key, is per host and port: two rows
    naming one would share the key one of them confirmed."""
    try:
        target = remote_target(uri)
    except (InvalidURI, HostError):
        return None
    return None if target is None else (target[0].lower(), target[1])


def host_at_endpoint(uri: str, exclude_pk: int | None = None) -> Host | None:
    """The registered host that already connects to the host and port ``uri`` names, or None."""
    wanted = endpoint(uri)
    others = Host.objects.all() if exclude_pk is None else Host.objects.exclude(pk=exclude_pk)
    if wanted is None:
        return others.filter(uri=uri).first()
    for other in others.only("pk", "name", "uri"):
        if endpoint(other.uri) == wanted:
            return other
    return None


def endpoint_clash_message(other: Host, uri: str) -> str:
    wanted = endpoint(uri)
    where = f"{wanted[0]} port {wanted[1]}" if wanted else "this URI"
    return (
        f"Host '{other.name}' is already registered at {where} ({other.uri}). One host and port is one host "
        f"in kvmweb (its SSH host key is trusted through that row): use '{other.name}', or change its URI."
    )


class HostStatus(models.TextChoices):
    UNKNOWN = "unknown", "Not synced yet"
    ONLINE = "online", "Online"
    OFFLINE = "offline", "Offline"
    ERROR = "error", "Error"

    @property
    def colour(self) -> str:
        return {"online": "green", "offline": "red", "error": "orange"}.get(self.value, "grey")


class DomainStateChoices(models.TextChoices):
    """A domain's state as the inventory keeps it (the choices of Domain.state); hosts.libvirt.DomainState
    is the same states as the libvirt seam reports them."""

    RUNNING = "running", "Running"
    BLOCKED = "blocked", "Blocked"
    PAUSED = "paused", "Paused"
    SHUTDOWN = "shutdown", "Shutting down"
    SHUTOFF = "shutoff", "Shut off"
    CRASHED = "crashed", "Crashed"
    PMSUSPENDED = "pmsuspended", "Suspended"
    NOSTATE = "nostate", "No state"
    # Defined on no host any more: the VM's row is kept (with its id, its
    # migrations and its audit entries) rather than deleted, and comes back
    # to life as it was if a host reports the VM again.
    GONE = "gone", "Gone"

    @property
    def colour(self) -> str:
        return {
            "running": "green",
            "paused": "orange",
            "crashed": "red",
            "blocked": "orange",
        }.get(self.value, "grey")


# The states in which a guest's QEMU process exists and holds its memory.
HOLDS_MEMORY = (
    DomainStateChoices.RUNNING,
    DomainStateChoices.BLOCKED,
    DomainStateChoices.PAUSED,
    DomainStateChoices.SHUTDOWN,
    DomainStateChoices.PMSUSPENDED,
)


# Reasons that keep kvmweb from connecting at all, by its own choice: the host
# shows offline (with the reason), not as an error libvirt reported.
OFFLINE_CODES = {"uri_refused", "host_key_unconfirmed", "host_key_changed"}


class HostKeyState(models.TextChoices):
    NONE = "", "No SSH"
    UNCONFIRMED = "unconfirmed", "Host key not confirmed yet"
    TRUSTED = "trusted", "Host key confirmed"
    CHANGED = "changed", "Host key CHANGED"


class Host(models.Model):
    name = models.SlugField(
        max_length=63,
        unique=True,
        help_text="Short name, as administrators call the host (kvm01).",
    )
    uri = models.CharField(
        "libvirt URI",
        max_length=500,
        unique=True,
        validators=[validate_libvirt_uri],
        help_text="How kvmweb reaches libvirtd, e.g. qemu+ssh://root@kvm01/system.",
    )
    status = models.CharField(max_length=10, choices=HostStatus.choices, default=HostStatus.UNKNOWN)
    status_reason = models.TextField(blank=True, help_text="Why the host is not online, in plain words.")
    status_detail = models.TextField(blank=True, help_text="libvirt's own message.")
    last_seen = models.DateTimeField(null=True, blank=True)
    last_sync = models.DateTimeField(null=True, blank=True)

    hostname = models.CharField(max_length=255, blank=True, help_text="As libvirt reports it.")
    host_uuid = models.CharField(max_length=36, blank=True)
    libvirt_version = models.CharField(max_length=20, blank=True)
    hypervisor_type = models.CharField(max_length=20, blank=True)
    hypervisor_version = models.CharField(max_length=20, blank=True)
    cpu_vendor = models.CharField(max_length=50, blank=True)
    cpu_model = models.CharField(max_length=100, blank=True)
    cpu_arch = models.CharField(max_length=20, blank=True)
    cpu_count = models.PositiveIntegerField(default=0)
    cpu_xml = models.TextField(blank=True)
    memory_total = models.BigIntegerField(default=0, help_text="Bytes.")
    memory_free = models.BigIntegerField(default=0, help_text="Bytes.")
    hugepages = models.JSONField(
        default=dict, blank=True, help_text='Huge pages set aside, by page size in KiB: {"2048": pages}.'
    )

    ssh_host_key = models.TextField(
        "trusted SSH host key",
        blank=True,
        help_text="The host key an operator confirmed; kvmweb connects over SSH only to a host offering it.",
    )
    ssh_offered_key = models.TextField(
        "SSH host key awaiting confirmation",
        blank=True,
        help_text="What the host offered when last asked, if it is not the trusted key.",
    )
    ssh_pinned_fingerprint = models.CharField(
        "pinned SSH fingerprint",
        max_length=100,
        blank=True,
        help_text="Given at registration: the first host key with this fingerprint is trusted without asking.",
    )

    # Every number a user sets has a maximum: a value far beyond any host
    # (10**29) overflowed the database or the capacity arithmetic into a 500.
    max_incoming = models.PositiveSmallIntegerField(
        default=2,
        validators=[MaxValueValidator(64)],
        help_text="Migrations into this host at once (at most 64); more wait in the queue.",
    )
    max_outgoing = models.PositiveSmallIntegerField(
        default=2,
        validators=[MaxValueValidator(64)],
        help_text="Migrations out of this host at once (at most 64); more wait in the queue.",
    )
    # Only for hosts registered over qemu+tls, and only when both ends of a
    # migration have it: the hosts already hold certificates from one CA, so
    # the memory (and disks) need not cross the network in clear.
    migrate_tls = models.BooleanField(
        "encrypt migrations (TLS)",
        default=True,
        help_text="For a host registered over qemu+tls: send live migrations to and from it over TLS "
        "(VIR_MIGRATE_TLS) when the other host is registered over TLS too. QEMU on both hosts needs the "
        "certificates in /etc/pki/qemu.",
    )
    # Set and cleared by the maintenance app (it audits who did it); no
    # migration may target a host while it is set.
    maintenance = models.BooleanField(default=False, help_text="In maintenance: no VM may move onto it.")
    maintenance_since = models.DateTimeField(null=True, blank=True)

    # Capacity (hosts/capacity.py). Empty: the default from the settings.
    memory_reserved_mib = models.PositiveIntegerField(
        "memory reserved (MiB)",
        null=True,
        blank=True,
        validators=[MaxValueValidator(MAX_RESERVED_MIB)],
        help_text="Memory kept for the host itself, never promised to guests. Empty: the default "
        "(KVMWEB_RESERVED_MEMORY_MIB).",
    )
    memory_ratio = models.FloatField(
        "memory allocation ratio",
        null=True,
        blank=True,
        validators=[MinValueValidator(0.1), MaxValueValidator(MAX_MEMORY_RATIO)],
        help_text="How many times its memory (less the reserve) the host may promise to guests; above 1.0 "
        "only if the guests never all use their memory at once. Empty: the default (KVMWEB_MEMORY_ALLOCATION_RATIO).",
    )
    cpu_ratio = models.FloatField(
        "vCPU allocation ratio",
        null=True,
        blank=True,
        validators=[MinValueValidator(0.1), MaxValueValidator(MAX_CPU_RATIO)],
        help_text="vCPUs the host may run per CPU before the checks warn. Empty: the default "
        "(KVMWEB_CPU_ALLOCATION_RATIO).",
    )

    # What libvirt tells of a host (hosts.libvirt.HostInfo), copied at each sync.
    LIBVIRT_FACTS = (
        "hostname",
        "host_uuid",
        "libvirt_version",
        "hypervisor_type",
        "hypervisor_version",
        "cpu_vendor",
        "cpu_model",
        "cpu_arch",
        "cpu_count",
        "cpu_xml",
        "memory_total",
        "memory_free",
        "hugepages",
    )
    CAPACITY_SETTINGS = ("memory_reserved_mib", "memory_ratio", "cpu_ratio")
    STATUS_FIELDS = ("status", "status_reason", "status_detail", "last_seen", "last_sync")
    SSH_FIELDS = ("ssh_host_key", "ssh_offered_key", "ssh_pinned_fingerprint")
    # Set on the hosts of capacity.with_counts (annotations, not columns).
    domain_count: int
    running_count: int

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        # Stored as kvmweb rebuilds it (the form validator has judged it already).

        with contextlib.suppress(InvalidURI):
            self.uri = validate_uri(self.uri)
        other = host_at_endpoint(self.uri, exclude_pk=self.pk)
        if other is not None:
            raise ValidationError({"uri": endpoint_clash_message(other, self.uri)})

    def get_absolute_url(self) -> str:
        return row_url("host-detail", self.name)

    @property
    def status_colour(self) -> str:
        return HostStatus(self.status).colour

    @cached_property
    def capacity(self) -> Capacity:
        """Committed against capacity, from the annotations of a host fetched
        through hosts/capacity.py (``with_committed``, ``with_counts``); a host
        fetched otherwise is read again there: ``capacity.for_any(host)``."""
        if not hasattr(self, "memory_committed"):
            raise RuntimeError(
                f"host {self.name} was not fetched with its committed figures: ask hosts.capacity.for_any(host)"
            )
        return figures.of(self)

    @property
    def memory_used(self) -> int:
        return max(self.memory_total - self.memory_free, 0)

    def address(self) -> str | None:
        """The host's own address, resolved from its URI (None if it resolves
        to no address but loopback): where migration data goes, and what
        consoles bound to this host listen on."""
        name = urlsplit(self.uri).hostname
        if not name:
            return None
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except socket.gaierror:
            return None
        for info in infos:
            if not ipaddress.ip_address(info[4][0]).is_loopback:
                return str(info[4][0])
        return None

    def mark_online(self, info: HostInfo) -> None:
        now = timezone.now()
        self.status = HostStatus.ONLINE
        self.status_reason = ""
        self.status_detail = ""
        self.last_seen = now
        self.last_sync = now
        for name in self.LIBVIRT_FACTS:
            setattr(self, name, getattr(info, name))

    # -- the URI and the SSH host key ---------------------------------------

    def parsed_uri(self) -> HostURI | None:
        """The URI as the allowlist reads it now, or None if it is refused."""
        try:
            return check_uri(self.uri)
        except InvalidURI:
            return None

    @property
    def uses_tls(self) -> bool:
        parsed = self.parsed_uri()
        return parsed is not None and parsed.transport == "tls"

    @property
    def wants_tls_migrations(self) -> bool:
        """Registered over TLS with the migrate_tls setting on: its migrations' streams go over TLS
        when the other host's do too."""
        return self.migrate_tls and self.uses_tls

    @property
    def uses_ssh(self) -> bool:
        parsed = self.parsed_uri()
        return parsed is not None and parsed.transport in SSH_TRANSPORTS

    @property
    def host_key_state(self) -> HostKeyState:
        if not self.uses_ssh:
            return HostKeyState.NONE
        if not self.ssh_host_key:
            return HostKeyState.UNCONFIRMED
        if self.ssh_offered_key and not _same_key(self.ssh_offered_key, self.ssh_host_key):
            return HostKeyState.CHANGED
        return HostKeyState.TRUSTED

    @property
    def ssh_fingerprint(self) -> str:
        return sshkeys.fingerprint(self.ssh_host_key) if self.ssh_host_key else ""

    @property
    def ssh_offered_fingerprint(self) -> str:
        return sshkeys.fingerprint(self.ssh_offered_key) if self.ssh_offered_key else ""

    def pools_with_sharing(self) -> list[StoragePool]:
        """The host's pools, each with ``sharing``: what the shared-storage check
        found of it, one PoolSharing per other host, and ``proved``: whether it
        found it shared with any. For the host page and the API."""
        found: dict[str, list[PoolSharing]] = {}
        for finding in self.pool_sharing.select_related("peer"):
            found.setdefault(finding.pool, []).append(finding)
        pools = list(self.pools.all())
        for pool in pools:
            pool.sharing = found.get(pool.name, [])
            pool.proved = any(f.shared for f in pool.sharing)
        return pools

    def forget_host_key_if_moved(self, new_uri: str) -> None:
        """A URI naming another host or port drops the keys of the old one. Not saved."""
        old = self.parsed_uri()
        try:
            new = check_uri(new_uri)
        except InvalidURI:
            new = None
        if old is None or new is None or (old.host, old.port) != (new.host, new.port):
            self.ssh_host_key = self.ssh_offered_key = self.ssh_pinned_fingerprint = ""

    def offer_host_key(self, key: str) -> bool:
        """Record the host key the host offers now; True if it is (now) the trusted one.

        A key matching the fingerprint pinned at registration becomes trusted
        here; any other key waits for an operator. Not saved.
        """
        kind, blob = sshkeys.parse_key(key)
        key = f"{kind} {blob}"
        if self.ssh_host_key and _same_key(key, self.ssh_host_key):
            self.ssh_offered_key = ""
            return True
        if not self.ssh_host_key and sshkeys.same_fingerprint(sshkeys.fingerprint(key), self.ssh_pinned_fingerprint):
            self.ssh_host_key, self.ssh_offered_key, self.ssh_pinned_fingerprint = key, "", ""
            return True
        self.ssh_offered_key = key
        return False

    def trust_host_key(self, fingerprint: str) -> None:
        """An operator confirms the host key the host offered. Not saved; raises HostKeyRefused."""
        if not self.uses_ssh:
            raise HostKeyRefused(f"{self.name} is not reached over SSH: there is no host key to confirm.")
        if not self.ssh_offered_key:
            if self.ssh_host_key and sshkeys.same_fingerprint(fingerprint, self.ssh_fingerprint):
                return  # confirmed already
            raise HostKeyRefused(
                f"kvmweb has no host key of {self.name} awaiting confirmation. Sync the host first, "
                "then confirm the fingerprint it shows."
            )
        offered = self.ssh_offered_fingerprint
        if not sshkeys.same_fingerprint(fingerprint, offered):
            raise HostKeyRefused(
                f"{self.name} offers the host key {offered}, not {fingerprint or '(none given)'}. "
                "Compare with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host before confirming."
            )
        self.ssh_host_key, self.ssh_offered_key, self.ssh_pinned_fingerprint = self.ssh_offered_key, "", ""

    def host_key_problem(self) -> HostError | None:
        """Why kvmweb must not log in to this host over SSH now (a HostError), or None."""
        state = self.host_key_state
        if state == HostKeyState.UNCONFIRMED:
            offered = self.ssh_offered_fingerprint
            shown = f"It offers {offered}. " if offered else ""
            return HostError(
                f"kvmweb does not trust the SSH host key of {self.name} yet. {shown}Compare it with "
                "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host, then confirm it on "
                "this host's page (or POST it to /api/hosts/{id}/trust/).".replace("{id}", str(self.pk)),
                code="host_key_unconfirmed",
            )
        if state == HostKeyState.CHANGED:
            return HostError(
                f"WARNING: the SSH host key of {self.name} has CHANGED (it was {self.ssh_fingerprint}, "
                f"it is now {self.ssh_offered_fingerprint}). Someone may be impersonating the host, or it "
                "was reinstalled. kvmweb will not connect until an operator who has checked the new key on "
                "the host confirms it.",
                code="host_key_changed",
            )
        return None

    def connect_uri(self) -> str:
        """The URI to open this host with, or the HostError saying why kvmweb must not.

        Every connection kvmweb opens to a registered host goes through this:
        over SSH only a row whose own host key an operator confirmed (or
        pinned) is logged in to, whatever known_hosts holds."""
        problem = self.host_key_problem()
        if problem is not None:
            raise problem
        return self.uri

    def mark_unreachable(self, error: HostError) -> None:
        """Record why the host cannot be read; keep everything last known of it."""
        offline = not error.permanent or error.code in OFFLINE_CODES
        self.status = HostStatus.OFFLINE if offline else HostStatus.ERROR
        self.status_reason = error.plain
        self.status_detail = error.detail
        self.last_sync = timezone.now()


class StoragePool(models.Model):
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="pools")
    name = models.CharField(max_length=255)
    uuid = models.UUIDField()
    type = models.CharField(max_length=20)
    target_path = models.CharField(max_length=1000, blank=True)
    capacity = models.BigIntegerField(default=0)
    allocation = models.BigIntegerField(default=0)
    available = models.BigIntegerField(default=0)
    active = models.BooleanField(default=True)
    shared = models.BooleanField(
        default=False,
        help_text="Network storage (NFS, Gluster, Ceph, iSCSI) reachable from several hosts.",
    )
    marked_shared = models.BooleanField(
        default=False,
        help_text="Set for a directory pool that is really a mounted share (an NFS mount "
        "defined as a dir pool). Pre-flight checks still verify it.",
    )
    volumes = models.JSONField(
        default=list,
        blank=True,
        help_text='Its volumes at the last sync: [{"name", "path", "capacity", "allocation"}].',
    )
    # Set by Host.pools_with_sharing (not columns): what the shared-storage check found.
    sharing: list[PoolSharing]
    proved: bool

    class Meta:
        ordering = ["host", "name"]
        constraints = [
            models.UniqueConstraint(fields=["host", "name"], name="pool_unique_name_per_host"),
        ]

    def __str__(self) -> str:
        return f"{self.name}@{self.host.name}"

    @property
    def is_shared(self) -> bool:
        return self.shared or self.marked_shared


class PoolSharing(models.Model):
    """What the shared-storage pre-flight check found of a pool: whether a probe
    volume written in it on ``host`` appeared on ``peer`` (in ``peer_pool``).

    Kept by pool name, not by StoragePool row, so it outlives a sync that
    renews the rows; the latest finding for a pair of hosts replaces the last.
    """

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="pool_sharing")
    pool = models.CharField(max_length=255)
    peer = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="+")
    peer_pool = models.CharField(max_length=255, blank=True, help_text="Where it appeared (or was looked for).")
    shared = models.BooleanField()
    checked_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["pool", "peer__name"]
        constraints = [
            models.UniqueConstraint(fields=["host", "pool", "peer"], name="pool_sharing_unique_per_peer"),
        ]

    def __str__(self) -> str:
        return f"{self.pool}@{self.host_id} {'shared' if self.shared else 'not shared'} with {self.peer_id}"

    @classmethod
    def record(cls, host: Host, pool: str, peer: Host, peer_pool: str, shared: bool) -> None:
        """Keep a finding both ways round (sharing is mutual); one way only
        when the peer's pool is not known."""
        at = timezone.now()
        for here, here_pool, there, there_pool in ((host, pool, peer, peer_pool), (peer, peer_pool, host, pool)):
            if here_pool:
                cls.objects.update_or_create(
                    host=here,
                    pool=here_pool,
                    peer=there,
                    defaults={"peer_pool": there_pool, "shared": shared, "checked_at": at},
                )


class Network(models.Model):
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="networks")
    name = models.CharField(max_length=255)
    uuid = models.UUIDField()
    bridge = models.CharField(max_length=15, blank=True)
    forward_mode = models.CharField(max_length=20, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["host", "name"]
        constraints = [
            models.UniqueConstraint(fields=["host", "name"], name="network_unique_name_per_host"),
        ]

    def __str__(self) -> str:
        return f"{self.name}@{self.host.name}"


# Where a VM with definitions on several hosts is said to be: the most active
# definition wins. A live migration's target is paused until the switch-over
# and its source paused after it, so "running" beats "paused" and the row
# follows the guest, not the handshake.
ACTIVITY = {
    DomainStateChoices.RUNNING: 3,
    DomainStateChoices.BLOCKED: 3,
    DomainStateChoices.PAUSED: 2,
    DomainStateChoices.SHUTDOWN: 2,
    DomainStateChoices.PMSUSPENDED: 2,
}


# What a list of VMs shows of each (DomainQuerySet.for_listing).
LISTED_FIELDS = ("name", "uuid", "state", "memory", "vcpus", "split_brain", "host")


class DomainQuerySet(models.QuerySet["Domain"]):
    def with_definitions(self) -> DomainQuerySet:
        return self.select_related("host").prefetch_related(
            models.Prefetch("definitions", queryset=DomainDefinition.objects.select_related("host"))
        )

    def for_listing(self) -> DomainQuerySet:
        """What a list of VMs shows of each: its own facts without disks and
        interfaces, its host's name, and only its definitions on other hosts
        (``other_definitions``; most VMs have none): a third of the work of
        ``with_definitions`` for a page of 100."""
        others = (
            DomainDefinition.objects.exclude(host=models.F("domain__host"))
            .select_related("host")
            .only("domain", "state", "host__name")
        )
        return (
            self.select_related("host")
            .only(*LISTED_FIELDS, "host__name")
            .prefetch_related(models.Prefetch("definitions", queryset=others, to_attr="listed_others"))
        )

    def for_api(self) -> DomainQuerySet:
        """Every field of each VM, every definition, and of the hosts only their
        names: what the API shows (hosts' rows are wide: CPU XML, SSH keys)."""
        definitions = DomainDefinition.objects.select_related("host").only(
            "domain", "state", "persistent", "last_seen", "host__name"
        )
        own = [f.name for f in Domain._meta.concrete_fields]
        return (
            self.select_related("host")
            .only(*own, "host__name")
            .prefetch_related(models.Prefetch("definitions", queryset=definitions))
        )

    def split_brains(self) -> DomainQuerySet:
        """VMs running on several hosts at once, for the alarms."""
        return self.filter(split_brain=True).with_definitions().order_by("name")


class DomainManager(models.Manager.from_queryset(DomainQuerySet)):  # type: ignore[misc]
    """The VMs that exist: a gone VM's row is kept for its history, but
    lists, counts, capacity and forms never see it (``Domain.rows`` does)."""

    def get_queryset(self) -> DomainQuerySet:
        rows: DomainQuerySet = super().get_queryset()
        return rows.exclude(state=DomainStateChoices.GONE)


class DomainFacts(models.Model):
    """What libvirt says of a VM on one host: a definition's facts, and the
    resolved VM's copy of them."""

    name = models.CharField(max_length=255)
    state = models.CharField(max_length=12, choices=DomainStateChoices.choices, default=DomainStateChoices.NOSTATE)
    memory = models.BigIntegerField(default=0, help_text="Bytes it has now (libvirt's currentMemory).")
    max_memory = models.BigIntegerField(
        default=0, help_text="Bytes it may use at most (libvirt's memory): what its host has promised it."
    )
    hugepage_kib = models.PositiveIntegerField(
        default=0, help_text="Size of the huge pages backing its memory, in KiB; 0: none."
    )
    vcpus = models.PositiveIntegerField(default=1)
    persistent = models.BooleanField(default=True)
    autostart = models.BooleanField(default=False)
    disks = models.JSONField(default=list, blank=True)
    interfaces = models.JSONField(default=list, blank=True)
    last_seen = models.DateTimeField(default=timezone.now)

    # Copied to the VM from the definition it is resolved to.
    FACTS = (
        "name",
        "state",
        "memory",
        "max_memory",
        "hugepage_kib",
        "vcpus",
        "persistent",
        "autostart",
        "disks",
        "interfaces",
    )

    class Meta:
        abstract = True

    @property
    def state_colour(self) -> str:
        return DomainStateChoices(self.state).colour


class Domain(DomainFacts):
    """A virtual machine: one row per UUID, wherever it is defined.

    ``host`` is where it runs or, if it runs nowhere, where it is defined
    (resolved by ``hosts.sync.resolve`` from its ``definitions``, one per
    host). The other fields are a copy of that host's definition.
    """

    uuid = models.UUIDField(unique=True)
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="domains")
    split_brain = models.BooleanField(
        default=False,
        help_text="Running on more than one host at once: migrations are refused until one copy is stopped.",
    )

    # Where it was running before it turned up running on ``host``, while that
    # host's last word still says "running" too: a move, or a split brain,
    # until the next word from there tells which.
    moved_from = models.ForeignKey(Host, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    objects = DomainManager()
    # Every row, the gone included: the inventory sync matches VMs by UUID
    # here, so a VM keeps its one row (and id) for life.
    rows = DomainQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        base_manager_name = "rows"
        indexes = [models.Index(fields=["host", "name"], name="domain_host_name")]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return row_url("domain-detail", self.uuid)

    @property
    def is_running(self) -> bool:
        return self.state in (DomainStateChoices.RUNNING, DomainStateChoices.BLOCKED, DomainStateChoices.PAUSED)

    def as_event(self) -> dict[str, Any]:
        """What the dashboard's socket says of this VM; names of hosts, text ready to show.
        Reads ``definitions`` (prefetch them with their hosts)."""
        return {
            "id": self.pk,
            "uuid": str(self.uuid),
            "name": self.name,
            "host": self.host.name,
            "state": self.state,
            "state_label": self.get_state_display(),
            "state_colour": self.state_colour,
            "split_brain": self.split_brain,
            "running_on": self.running_on,
            "also_defined": [
                {"host": d.host.name, "state": d.state, "state_label": d.get_state_display().lower()}
                for d in self.other_definitions
            ],
            "url": self.get_absolute_url(),
        }

    @property
    def other_definitions(self) -> list[DomainDefinition]:
        """The definitions on hosts other than the one it is shown on ("also defined on")."""
        if hasattr(self, "listed_others"):  # read by for_listing()
            listed: list[DomainDefinition] = self.listed_others
            return listed
        return [d for d in self.definitions.all() if d.host_id != self.host_id]

    @property
    def running_on(self) -> list[str]:
        return sorted(d.host.name for d in self.definitions.all() if d.is_running)


class DomainDefinition(DomainFacts):
    """What one host says of one VM: libvirt keeps a definition per host, and
    a VM moved by hand (``virsh migrate`` without ``--undefinesource``), or
    defined on every host of a pacemaker cluster, has several."""

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="definitions")
    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="definitions")
    last_active = models.DateTimeField(null=True, blank=True, help_text="When this host last reported the VM active.")
    running_since = models.DateTimeField(
        null=True, blank=True, help_text="Since when this host reports the VM running, as kvmweb saw it."
    )

    class Meta:
        ordering = ["host__name"]
        constraints = [
            models.UniqueConstraint(fields=["host", "domain"], name="one_definition_per_host"),
        ]

    def __str__(self) -> str:
        return f"{self.name}@{self.host.name}"

    @property
    def activity(self) -> int:
        return ACTIVITY.get(DomainStateChoices(self.state), 0)

    @property
    def is_active(self) -> bool:
        return self.activity > 0

    @property
    def is_running(self) -> bool:
        return self.activity == ACTIVITY[DomainStateChoices.RUNNING]
