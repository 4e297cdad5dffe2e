"""The part of a Connection that moves a running domain: peer-to-peer
migration, its job statistics, its steering and its abort."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from typing import Any

import libvirt

from .base import Ops
from .errors import PEER_SSH, PEER_TLS, HostError, InvalidURI, translate, translated
from .types import POSTCOPY_ACTIVE, POSTCOPY_FAILED, JobStats
from .uri import HostURI, allowed, check_uri

# The flags a migration record keeps, by name.
FLAG_NAMES = {
    "live": libvirt.VIR_MIGRATE_LIVE,
    "peer2peer": libvirt.VIR_MIGRATE_PEER2PEER,
    "persist_dest": libvirt.VIR_MIGRATE_PERSIST_DEST,
    "undefine_source": libvirt.VIR_MIGRATE_UNDEFINE_SOURCE,
    "non_shared_disk": libvirt.VIR_MIGRATE_NON_SHARED_DISK,
    "auto_converge": libvirt.VIR_MIGRATE_AUTO_CONVERGE,
    "postcopy": libvirt.VIR_MIGRATE_POSTCOPY,
    "abort_on_error": libvirt.VIR_MIGRATE_ABORT_ON_ERROR,
    # Several connections for the memory (QEMU's multifd), their number a parameter.
    "parallel": libvirt.VIR_MIGRATE_PARALLEL,
    # The migration stream itself over TLS, with the hosts' certificates in /etc/pki/qemu.
    "tls": libvirt.VIR_MIGRATE_TLS,
    # Reconnect a post-copy migration whose link broke (both sides paused).
    "postcopy_resume": libvirt.VIR_MIGRATE_POSTCOPY_RESUME,
}

# The errors that mean "no job to speak of": the domain is gone, or not running.
_NO_JOB = (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID)


PEER_SSH_SIGNS = ("host key verification failed", "permission denied (publickey", "no user interaction callback")


def peer_error(error: libvirt.libvirtError, source: str, dest: HostURI) -> HostError | None:
    """The source host could not open the target's URI itself (peer-to-peer): a HostError, or None.

    Password-less login between the hosts: in a peer-to-peer migration
    the source's libvirtd logs in to the target as root with root's own SSH
    key and known_hosts (or /etc/pki for TLS). Without them the migration
    stops within a second, before anything moved.
    """
    detail = error.get_error_message() or str(error)
    lower = detail.lower()
    src = _host_of(source)
    if dest.transport in ("ssh", "libssh") and any(sign in lower for sign in PEER_SSH_SIGNS):
        user = dest.user or "root"
        return HostError(
            f"The source host {src} could not log in to {dest.host} over SSH, so the migration did not start "
            f"and the VM stays where it was. Set up password-less login between the hosts: "
            f"as root on {src}, run `ssh-keygen -t ed25519` (once), `ssh-copy-id {user}@{dest.host}` "
            f"and `ssh {user}@{dest.host} hostname` to accept its host key; then try again.",
            detail,
            code=PEER_SSH,
        )
    if dest.transport == "tls" and "failed to connect to remote libvirt uri" in lower and "certificate" in lower:
        return HostError(
            f"The source host {src} could not open a TLS connection to {dest.host}: it needs a client "
            "certificate signed by the CA the target trusts (/etc/pki/libvirt/clientcert.pem and "
            "/etc/pki/libvirt/private/clientkey.pem on the source).",
            detail,
            code=PEER_TLS,
        )
    return None


TLS_STREAM_SIGNS = ("tls channel", "x509", "/etc/pki/qemu", "certificate", "gnutls")


def tls_stream_error(error: libvirt.libvirtError, names: list[str], dest: HostURI) -> HostError | None:
    """A migration stream over TLS that QEMU could not set up: a HostError, or None.

    QEMU on each host reads /etc/pki/qemu (ca-cert.pem, server-cert.pem and
    server-key.pem on the target, client-cert.pem and client-key.pem on the
    source); a missing file, or a target certificate that does not name the
    address the data goes to, ends the migration at its start with the VM
    where it was."""
    if "tls" not in names:
        return None
    detail = error.get_error_message() or str(error)
    if not any(sign in detail.lower() for sign in TLS_STREAM_SIGNS):
        return None
    return HostError(
        f"The migration stream to {dest.host} could not be set up over TLS, so nothing moved and the VM stays "
        "where it was. QEMU on both hosts needs the CA and the host's certificate in /etc/pki/qemu "
        "(ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem, client-key.pem), and the target's "
        "certificate must name the address the data goes to. Fix them, or turn off 'encrypt migrations (TLS)' "
        "for one of the hosts.",
        detail,
        code="migration_tls",
    )


def _host_of(uri: str) -> str:
    try:
        return check_uri(uri).host or "the source host"
    except InvalidURI:
        return "the source host"


def migration_flags(names: Iterable[str]) -> int:
    """The libvirt flag word for a list of flag names (kept as names in the record)."""
    value = 0
    for name in names:
        value |= FLAG_NAMES[name]
    return value


def rewrite_disk_paths(xml: str, paths: Mapping[str, str]) -> str:
    """The domain XML with disk sources moved to their new paths."""
    if not paths:
        return xml
    root = ET.fromstring(xml)
    # At any depth: a snapshot's XML holds the domain's definition.
    for source in root.iterfind(".//devices/disk/source"):
        old = source.get("file")
        if old is not None and old in paths:
            source.set("file", paths[old])
    return ET.tostring(root, encoding="unicode")


class MigrationOps(Ops):
    def migrate(
        self,
        uuid: object,
        dest_uri: str,
        flag_names: Iterable[str],
        *,
        migrate_uri: str | None = None,
        bandwidth_mib: int | None = None,
        disks: list[str] | None = None,
        destination_xml: str | None = None,
        auto_converge: tuple[int, int] | None = None,
        parallel_connections: int = 0,
        postcopy_bandwidth: bool = False,
    ) -> None:
        """Start a peer-to-peer migration and return when it ends (blocks).

        dest_uri goes to the source host's libvirtd, which opens it as root:
        it is checked against the allowlist again here and handed over in its
        canonical form, without any of kvmweb's own options (the source host
        logs in with its own keys, set up by the administrator beforehand).
        """
        dest = allowed(dest_uri)
        names = list(flag_names)
        params: dict[str, Any] = {}
        if migrate_uri:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = migrate_uri
        # A post-copy resume takes the URI only: the one resume seen to work
        # on the lab had no other parameter (libvirt 9.0 does not apply a
        # bandwidth to a resume anyway, libvirt issue 333).
        if bandwidth_mib and "postcopy_resume" not in names:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(bandwidth_mib)
            if postcopy_bandwidth:
                # Without it post-copy sends at full speed whatever the limit
                # (QEMU's postcopy-bandwidth is 0, unlimited, unless set).
                params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY] = int(bandwidth_mib)
        if disks:
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(disks)
        if destination_xml:
            params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = destination_xml
            params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = destination_xml
        if auto_converge:
            initial, increment = auto_converge
            params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL] = initial
            params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT] = increment
        if parallel_connections and "parallel" in names:
            params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = int(parallel_connections)
        dom = self._dom(uuid)
        try:
            dom.migrateToURI3(str(dest), params, migration_flags(names))
        except libvirt.libvirtError as e:
            raise peer_error(e, self.uri, dest) or tls_stream_error(e, names, dest) or translate(e, self.uri) from None

    def probe_peer(self, uuid: object, dest_uri: str) -> HostError | None:
        """Can this (source) host's libvirtd log in to dest_uri, as a peer-to-peer migration will?

        Asks the source to migrate with a destination XML that cannot be
        parsed: libvirt opens the connection to the target first and refuses
        the XML right after, before anything starts. None if the source got
        in (or cannot be asked: the test driver), else the HostError.
        """
        dest = allowed(dest_uri)
        if not dest.remote or not allowed(self.uri).remote:
            return None
        flags = libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_LIVE
        try:
            self._dom(uuid).migrateToURI3(str(dest), {libvirt.VIR_MIGRATE_PARAM_DEST_XML: "<domain/>"}, flags)
        except libvirt.libvirtError as e:
            peer = peer_error(e, self.uri, dest)
            if peer is not None:
                return peer
            lower = (e.get_error_message() or "").lower()
            if any(s in lower for s in ("failed to connect to remote libvirt uri", "cannot recv data", "unable to")):
                return translate(e, self.uri)
        return None

    def job_stats(self, uuid: object, completed: bool = False) -> JobStats:
        """The running job's statistics, or with completed those of the last
        finished one; inactive stats when there is no job (or no domain)."""
        raw = self._raw_job_stats(uuid, completed)
        if raw is None:
            return JobStats(active=False)
        active = not completed and raw.get("type", 0) != libvirt.VIR_DOMAIN_JOB_NONE
        return JobStats.from_libvirt(raw, active)

    @translated(absent=_NO_JOB, default=None)
    def _raw_job_stats(self, uuid: object, completed: bool) -> dict[str, Any] | None:
        dom = self._conn.lookupByUUIDString(str(uuid))
        return dict(dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED if completed else 0))

    @translated(absent=_NO_JOB, default=False)
    def abort_job(self, uuid: object) -> bool:
        """Abort the domain's running job (a migration); False if it had none."""
        self._conn.lookupByUUIDString(str(uuid)).abortJob()
        return True

    def set_max_downtime(self, uuid: object, ms: int) -> None:
        self.call(self._dom(uuid).migrateSetMaxDowntime, int(ms), 0)

    def start_postcopy(self, uuid: object) -> None:
        self.call(self._dom(uuid).migrateStartPostCopy, 0)

    def dirty_rate(self, uuid: object, seconds: int = 1, repeats: int = 3) -> list[int]:
        """The guest's dirty rate in bytes per second, by libvirt's page
        sampling (virDomainStartDirtyRateCalc), measured ``repeats`` times over
        ``seconds`` each: one figure per measurement.

        Page sampling only (``dirty-bitmap`` crashed QEMU 7.2 in the lab). Short
        periods, several of them: QEMU hashes 512 pages per GiB at the start and
        the end of the period and counts those that changed, so a page
        rewritten twice counts once (a long period under-reports a guest that
        rewrites a small region) and a small guest has few samples (one
        measurement of a 256 MiB guest rests on 128 pages: ±30 %).
        """
        dom = self._dom(uuid)
        figures = []
        for _ in range(max(1, repeats)):
            self.call(dom.startDirtyRateCalc, int(seconds), libvirt.VIR_DOMAIN_DIRTYRATE_MODE_PAGE_SAMPLING)
            time.sleep(seconds)
            deadline = time.monotonic() + seconds + 5
            while True:
                stats = self.call(self._conn.domainListGetStats, [dom], libvirt.VIR_DOMAIN_STATS_DIRTYRATE)
                values = stats[0][1] if stats else {}
                if values.get("dirtyrate.calc_status") == libvirt.VIR_DOMAIN_DIRTYRATE_MEASURED:
                    # QEMU's "MB" are MiB (it shifts by 20).
                    figures.append(int(values.get("dirtyrate.megabytes_per_second", 0)) * 1024 * 1024)
                    break
                if time.monotonic() > deadline:
                    raise HostError("libvirt did not finish measuring the dirty rate.", code="dirty_rate")
                time.sleep(0.1)
        return figures

    @translated(absent=(libvirt.VIR_ERR_NO_DOMAIN,), default=None)
    def postcopy_state(self, uuid: object) -> str | None:
        """Where the domain stands in a post-copy migration, from libvirt's state reason:
        POSTCOPY_FAILED when libvirt lost the link in the middle of post-copy (the source
        paused with the memory not yet sent, the target running but stalled without it),
        POSTCOPY_ACTIVE while post-copy runs, "" otherwise; None if the domain is not here."""
        state, reason = self._conn.lookupByUUIDString(str(uuid)).state()
        failed = {
            libvirt.VIR_DOMAIN_PAUSED: libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED,
            libvirt.VIR_DOMAIN_RUNNING: libvirt.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED,
        }
        active = {
            libvirt.VIR_DOMAIN_PAUSED: libvirt.VIR_DOMAIN_PAUSED_POSTCOPY,
            libvirt.VIR_DOMAIN_RUNNING: libvirt.VIR_DOMAIN_RUNNING_POSTCOPY,
        }
        if failed.get(state) == reason:
            return POSTCOPY_FAILED
        if active.get(state) == reason:
            return POSTCOPY_ACTIVE
        return ""

    def pause_postcopy(self, uuid: object) -> None:
        """Make QEMU drop a post-copy stream it still believes in (migrate-pause),
        so that it can be resumed: after a link comes back, the old TCP
        connection may look alive to QEMU while libvirt has given up on it, and
        libvirt then refuses the resume ("QEMU reports migration is still running")."""
        self.call(self._dom(uuid).abortJobFlags, libvirt.VIR_DOMAIN_ABORT_JOB_POSTCOPY)
