"""Pre-flight checks: what must hold for a migration to work (CPU, memory,
storage, networks, devices, the hosts' login to each other), and the usual
reasons one fails, asked of the real hosts before anything moves.

Each check answers pass, warn or fail with a sentence an administrator can act
on. A failed check stops the migration; a warning does not.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import socket
import time
import uuid as uuidlib
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.core.cache import cache
from django.utils import timezone

from hosts import capacity
from hosts.libvirt import CpuComparison, HostError, allowed, certificate_problem, open_host
from hosts.models import Domain, Host, PoolSharing
from kvmweb.formatting import size

from . import device_checks
from .models import AuditAction, Migration, Mode, Status, StorageMode
from .policies import get_policy, outpaced

if TYPE_CHECKING:
    from .request import MigrationRequest

PASS, WARN, FAIL = "pass", "warn", "fail"
MiB = 1024 * 1024

# A source pool a probe volume proved shared with a target (hosts.PoolSharing)
# stays proved this long: within it the probe is not written again, while
# every disk's path is still looked up on the target at every check. What
# could change unnoticed meanwhile: the target mounting other storage at the
# same path, holding files of the same names. A probe that finds the pool not
# shared replaces the proof at once.
SHARED_PROOF_SECONDS = 300

# The source host proved it can log in to the target's libvirt itself (the
# peer-login probe, a connection from the one to the other: an SSH handshake
# over qemu+ssh, about 0.6 s) this long ago at most: within it the probe is
# not made again. Kept in the cache (Redis), by the pair of URIs. What could
# change unnoticed meanwhile: the source's key or certificate removed; the
# migration then fails at its start with the login's own message, the VM
# where it was, and forgets the proof (forget_peer_login).
PEER_PROOF_SECONDS = 300
PEER_LOGIN_CODES = ("peer_ssh", "peer_tls")


LABELS = {
    "single_copy": "Runs on one host only",
    "source_reachable": "Source answers",
    "target_reachable": "Target answers",
    "domain_state": "VM state",
    "target_hostname": "Target host name",
    "peer_login": "Source can log in to the target",
    "architecture": "Architecture",
    "cpu_vendor": "CPU vendor",
    "cpu_model": "Guest CPU on the target",
    "nx_flag": "NX flag",
    "name_clash": "Name and UUID free",
    "networks": "Bridges and networks",
    "storage": "Disks",
    "shared_storage": "Shared storage",
    "target_pool": "Target pool",
    "free_space": "Free space",
    "target_volumes": "Target volume names",
    "memory": "Memory",
    "hugepages": "Huge pages",
    "vcpus": "vCPUs",
    "maintenance": "Target not in maintenance",
    "placement_rules": "Placement rules",
    "convergence": "Will it converge?",
    **device_checks.LABELS,
}


@dataclass
class CheckResult:
    name: str
    result: str  # pass, warn, fail
    message: str
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": LABELS.get(self.name, self.name.replace("_", " ").capitalize())}


class Checks:
    def __init__(self):
        self.results = []

    def add(self, name, result, message, detail=""):
        self.results.append(CheckResult(name, result, message, str(detail or "")))


def run_checks(req: MigrationRequest | Migration, source: Any = None, target: Any = None) -> list[CheckResult]:
    """Run every check for a request (a request.MigrationRequest or a Migration).

    ``source``/``target`` are open connections when the caller has them
    (the engine); otherwise they are opened and closed here.
    """
    checks = Checks()
    values = _request_values(req)
    if not _check_single_copy(checks, values):
        return checks.results
    with contextlib.ExitStack() as stack:
        if source is None:
            source = _connect(stack, checks, "source_reachable", values["source"])
        if target is None:
            target = _connect(stack, checks, "target_reachable", values["target"])
        if source is None or target is None:
            return checks.results
        _run_all(checks, values, source, target)
    return checks.results


def _check_single_copy(checks, v):
    """A VM running on two hosts at once (split brain) is not moved: which
    copy is the real one is for an administrator to decide."""
    domain = Domain.objects.filter(uuid=v["uuid"], split_brain=True).first()
    if domain is None:
        return True
    checks.add("single_copy", FAIL, split_brain_message(domain))
    return False


def split_brain_message(domain):
    return (
        f"{domain.name} runs on {' and '.join(domain.running_on)} at once (split brain). Stop the copy that "
        "should not run, refresh the inventory, then migrate it."
    )


def _connect(stack, checks, name, host):
    role = "source" if name.startswith("source") else "target"
    try:
        conn = stack.enter_context(open_host(host.connect_uri()))
    except HostError as e:
        checks.add(name, FAIL, f"The {role} host {host.name} cannot be reached: {e.plain}", e.detail)
        return None
    checks.add(name, PASS, f"The {role} host {host.name} answers.")
    return conn


# Named alike on a MigrationRequest and on a Migration.
SHARED_FIELDS = (
    "mode",
    "storage",
    "target_pool",
    "bandwidth_mib",
    "policy",
    "force_off",
    "shutdown_timeout",
    "eject_media",
    "rule_override",
    "target",
)


def _request_values(req):
    """The fields the checks need, from a MigrationRequest or a Migration."""
    values = {name: getattr(req, name) for name in SHARED_FIELDS}
    if isinstance(req, Migration):
        values.update(uuid=req.domain_uuid, name=req.domain_name, source=req.source, migration=req.pk, record=req)
    else:
        values.update(uuid=req.domain.uuid, name=req.domain.name, source=req.domain.host, migration=None, record=None)
    return values


def _run_all(checks, v, source, target):
    try:
        dom = source.domain_details(v["uuid"])
    except HostError as e:
        checks.add("domain_state", FAIL, f"kvmweb could not read {v['name']} on the source: {e.plain}", e.detail)
        return
    if dom is None:
        checks.add(
            "domain_state",
            FAIL,
            f"{v['name']} is not on {v['source'].name} any more. Refresh the inventory to see where it is.",
        )
        return
    for check in (
        _check_maintenance,
        _check_placement_rules,
        _check_state,
        _check_hostname,
        _check_migration_tls,
        _check_peer_login,
        _check_arch,
        _check_cpu_vendor,
        _check_cpu_model,
        _check_nx,
        _check_clash,
        _check_networks,
        _check_storage,
        _check_memory,
        _check_convergence,
        device_checks.check_devices,
    ):
        try:
            check(checks, v, dom, source, target)
        except HostError as e:
            checks.add(
                check.__name__.removeprefix("_check_"), FAIL, f"kvmweb could not check this: {e.plain}", e.detail
            )


def _check_maintenance(checks, v, dom, source, target):
    # Asked again here, in the worker: maintenance may have begun after the
    # migration was queued.
    host = Host.objects.filter(pk=v["target"].pk).only("maintenance").first()
    if host is not None and host.maintenance:
        checks.add(
            "maintenance",
            FAIL,
            f"{v['target'].name} went into maintenance after this migration was requested: no VM may "
            "move onto it now. Choose another target host.",
        )


def _check_placement_rules(checks, v, dom, source, target):
    """A move that breaks a placement rule (maintenance.models.PlacementRule) fails, naming the rule.
    Only VMs that a rule names get this check."""
    # Here, not at the top: maintenance builds on this app, not the other way round.
    from maintenance import planner
    from maintenance import rules as placement

    uuid = str(v["uuid"])
    mine = [r for r in placement.enabled() if uuid in r.vms]
    if not mine:
        return
    where = placement.where(mine)
    hosts = {h.pk: planner.HostFacts(id=h.pk, name=h.name) for h in Host.objects.only("name")}
    target_facts = hosts.get(v["target"].pk) or planner.HostFacts(id=v["target"].pk, name=v["target"].name)
    why = planner.rule_refusal(mine, uuid, v["name"], target_facts, where, hosts)
    names = ", ".join(sorted(r.name for r in mine))
    reason = (v.get("rule_override") or "").strip()
    if why and reason:
        checks.add(
            "placement_rules",
            WARN,
            f"Moving {v['name']} to {v['target'].name} breaks a placement rule: {why}. The operator overrides "
            f"it: {reason}",
        )
    elif why:
        checks.add(
            "placement_rules",
            FAIL,
            f"Moving {v['name']} to {v['target'].name} breaks a placement rule: {why}. Choose a host the rule "
            "allows, or change the rule first.",
        )
    else:
        checks.add("placement_rules", PASS, f"{v['target'].name} keeps {v['name']}'s placement rules ({names}).")


def _check_state(checks, v, dom, source, target):
    state = dom.info.state
    if dom.job_active:
        checks.add(
            "domain_state",
            FAIL,
            f"{v['name']} already has a job running in libvirt (a migration, backup or save). Wait for it to finish.",
        )
    elif v["mode"] == Mode.LIVE:
        if dom.active:
            checks.add("domain_state", PASS, f"{v['name']} is {state}: it can move live.")
        else:
            checks.add(
                "domain_state",
                FAIL,
                f"{v['name']} is {state}, not running, so it cannot be migrated live. "
                "Use a cold migration, or start it first.",
            )
    else:
        if not dom.info.persistent:
            checks.add(
                "domain_state",
                FAIL,
                f"{v['name']} is transient (it has no saved definition): a cold migration would "
                "lose it when it shuts down. Define it first, or migrate it live.",
            )
        elif dom.active:
            how = (
                f"it will be powered off if it has not shut down after {v['shutdown_timeout']} s"
                if v["force_off"]
                else f"the migration fails, leaving it running, if it has not shut down after {v['shutdown_timeout']} s"
            )
            checks.add(
                "domain_state",
                WARN,
                f"{v['name']} is running: it will be shut down for the copy and started again on the target; {how}.",
            )
        else:
            checks.add("domain_state", PASS, f"{v['name']} is {state}: ready for a cold migration.")


def _check_peer_login(checks: Any, v: Any, dom: Any, source: Any, target: Any) -> None:
    """Whether the source host can log in to the target's libvirt on its own (with its root's SSH key
    or its TLS client certificate), as a peer-to-peer migration needs: asked of the source host itself,
    before anything starts, so a missing key fails the check rather than the migration."""
    if v["mode"] != Mode.LIVE or not dom.active or not allowed(v["source"].uri).remote:
        return  # nothing to ask of libvirt's test driver
    key = _peer_proof_key(v["source"].uri, v["target"].uri)
    proved_at = _cached(key)
    if isinstance(proved_at, float) and 0 <= time.time() - proved_at < PEER_PROOF_SECONDS:
        checks.add(
            "peer_login",
            PASS,
            f"{v['source'].name} can open {v['target'].name}'s libvirt itself: it did "
            f"{time.time() - proved_at:.0f} s ago (kvmweb asks again after {PEER_PROOF_SECONDS // 60} minutes).",
        )
        return
    problem = source.probe_peer(v["uuid"], v["target"].uri)
    if problem is None:
        with contextlib.suppress(Exception):  # no cache: the probe is made each time
            cache.set(key, time.time(), PEER_PROOF_SECONDS)
        checks.add("peer_login", PASS, f"{v['source'].name} can open {v['target'].name}'s libvirt itself.")
    else:
        forget_peer_login(v["source"].uri, v["target"].uri)
        checks.add("peer_login", FAIL, problem.plain, problem.detail)


def _peer_proof_key(source_uri: str, target_uri: str) -> str:
    return "kvmweb:peer-login:" + hashlib.sha256(f"{source_uri}\n{target_uri}".encode()).hexdigest()[:40]


def _cached(key: str) -> Any:
    try:
        return cache.get(key)
    except Exception:  # Redis away: no proof, so the probe
        return None


def forget_peer_login(source_uri: str, target_uri: str) -> None:
    """The source could not log in to the target after all: probe again next time."""
    with contextlib.suppress(Exception):
        cache.delete(_peer_proof_key(source_uri, target_uri))


def migration_address(target_host: Any, target_conn: Any = None) -> tuple[str | None, str]:
    """Where QEMU sends the migration data: the target's own address from its URI.

    Sending to an address, not to the name the target reports, still works
    when the target's own name resolves to 127.0.0.1 there, where libvirt
    would otherwise refuse ("hostname on destination resolved to localhost").
    Returns (address or None, reported hostname)."""
    reported = target_conn.hostname() if target_conn is not None else ""
    return target_host.address(), reported


def _check_migration_tls(checks, v, dom, source, target):
    """A live migration between two hosts registered over TLS sends its stream
    over TLS (engine.live.tls_stream): the target's certificate must name the
    address the data goes to, or QEMU gives up with a bare "Cannot read from TLS channel"."""
    src_host, dst_host = v["source"], v["target"]
    if v["mode"] != Mode.LIVE or not (src_host.wants_tls_migrations and dst_host.wants_tls_migrations):
        return
    address, _ = migration_address(dst_host)
    if not address:
        return
    problem = certificate_problem(dst_host.uri, address)
    off = f"or turn off 'encrypt migrations (TLS)' for {dst_host.name} to send the stream in clear"
    if problem is None:
        checks.add(
            "migration_tls",
            PASS,
            f"The migration stream goes over TLS: {dst_host.name}'s certificate is signed by the CA kvmweb "
            f"trusts and names {address}, where the data goes.",
        )
    elif problem[0] == "name":
        checks.add(
            "migration_tls",
            FAIL,
            f"The migration stream would go over TLS to {address}, but {dst_host.name}'s certificate does not "
            f"name that address, so the source would refuse it. Issue {dst_host.name} a certificate with "
            f"{address} among its subject alternative names (in /etc/pki/qemu/server-cert.pem and "
            f"/etc/pki/libvirt/servercert.pem), {off}.",
            problem[1],
        )
    elif problem[0] == "trust":
        checks.add(
            "migration_tls",
            FAIL,
            f"The migration stream would go over TLS, but {dst_host.name}'s certificate is not one the hosts' CA "
            f"signed (or it expired), so the source would refuse it. Renew it from the CA in /etc/pki/CA, {off}.",
            problem[1],
        )
    else:
        checks.add(
            "migration_tls",
            WARN,
            f"The migration stream goes over TLS, but kvmweb could not look at {dst_host.name}'s certificate "
            f"first. If the migration fails at the start, check /etc/pki/qemu on both hosts, {off}.",
            problem[1],
        )


def _check_hostname(checks, v, dom, source, target):
    if v["mode"] != Mode.LIVE and v["storage"] != StorageMode.COPY:
        return
    address, reported = migration_address(v["target"], target)
    if address:
        checks.add(
            "target_hostname",
            PASS,
            f"The target calls itself {reported}; the migration data goes straight to "
            f"{address}, so that name need not resolve on the source.",
        )
        return
    if reported.split(".")[0] in ("localhost", "") or _resolves_to_loopback(reported):
        checks.add(
            "target_hostname",
            FAIL,
            f"The target's host name '{reported}' resolves to localhost, so the source would "
            "try to send the VM to itself. Give the target a real name in /etc/hosts or DNS "
            "on both hosts, or register it with its IP address in the URI.",
        )
    else:
        checks.add(
            "target_hostname",
            WARN,
            f"The target calls itself '{reported}'. The source host must resolve that name to "
            "the target's address (check /etc/hosts or DNS there); kvmweb cannot check it.",
        )


def _resolves_to_loopback(name):
    try:
        return any(ipaddress.ip_address(i[4][0]).is_loopback for i in socket.getaddrinfo(name, None))
    except (socket.gaierror, ValueError):
        return False


def _check_arch(checks, v, dom, source, target):
    src, dst = v["source"], v["target"]
    arches = target.guest_arches(dom.virt_type)
    if dom.arch and dom.arch not in arches:
        checks.add(
            "architecture",
            FAIL,
            f"{v['name']} is a {dom.arch} guest, and {dst.name} cannot run {dom.arch} guests "
            f"({dom.virt_type}); it runs {', '.join(sorted(arches)) or 'none'}.",
        )
    elif src.cpu_arch and dst.cpu_arch and src.cpu_arch != dst.cpu_arch:
        checks.add(
            "architecture",
            WARN,
            f"The hosts differ ({src.cpu_arch} and {dst.cpu_arch}); the target can still run {dom.arch} guests.",
        )
    else:
        checks.add("architecture", PASS, f"Both hosts run {dom.arch or src.cpu_arch} guests.")


def _check_cpu_vendor(checks, v, dom, source, target):
    src, dst = v["source"], v["target"]
    if src.cpu_vendor == dst.cpu_vendor:
        checks.add("cpu_vendor", PASS, f"Both hosts have {src.cpu_vendor or 'the same'} CPUs.")
    elif dom.cpu_mode == "host-passthrough" and v["mode"] == Mode.LIVE:
        checks.add(
            "cpu_vendor",
            FAIL,
            f"The hosts' CPUs are from different vendors ({src.cpu_vendor}, {dst.cpu_vendor}) and "
            f"{v['name']} sees the host CPU as it is (host-passthrough): it would crash after a "
            "live move. Migrate it cold, or give it a named CPU model.",
        )
    else:
        checks.add(
            "cpu_vendor",
            WARN,
            f"The hosts' CPUs are from different vendors ({src.cpu_vendor}, {dst.cpu_vendor}). "
            "The guest CPU model check below decides whether it can run there.",
        )


def _check_cpu_model(checks, v, dom, source, target):
    if dom.cpu_mode in ("", None):
        checks.add(
            "cpu_model", PASS, "The guest uses the hypervisor's default CPU model, which any host of this kind runs."
        )
        return
    if dom.cpu_mode == "host-passthrough":
        verdict, detail = target.compare_host_cpu(v["source"].cpu_xml)
        if verdict in (CpuComparison.IDENTICAL, CpuComparison.SUPERSET):
            same = verdict == CpuComparison.IDENTICAL
            checks.add(
                "cpu_model",
                PASS if same else WARN,
                "The guest sees the source's CPU as it is; the target's CPU "
                + ("is the same." if same else "has at least its features."),
                detail,
            )
        else:
            checks.add(
                "cpu_model",
                FAIL,
                "The guest sees the source's CPU as it is (host-passthrough), and the target's "
                "CPU lacks some of its features. Migrate it cold.",
                detail,
            )
        return
    verdict, detail = target.compare_guest_cpu(dom.cpu_xml, dom.arch, dom.machine, dom.virt_type)
    if verdict in (CpuComparison.IDENTICAL, CpuComparison.SUPERSET):
        checks.add("cpu_model", PASS, "libvirt confirms the target can provide the guest's CPU model.", detail)
    else:
        checks.add(
            "cpu_model",
            FAIL if v["mode"] == Mode.LIVE else WARN,
            "The target cannot provide the guest's CPU model and features"
            + (
                ": the guest would not survive a live move. Choose a host with the same CPU "
                "generation, or give the guest an older CPU model."
                if v["mode"] == Mode.LIVE
                else "; the guest may not start there."
            ),
            detail,
        )


def _check_nx(checks, v, dom, source, target):
    src, dst = v["source"], v["target"]
    if not (src.cpu_xml and dst.cpu_xml):
        checks.add("nx_flag", WARN, "kvmweb does not know both hosts' CPU flags yet: sync them.")
        return
    a = "nx" in source.cpu_features(src.cpu_xml)
    b = "nx" in target.cpu_features(dst.cpu_xml)
    if a == b:
        checks.add("nx_flag", PASS, f"The NX flag is {'on' if a else 'off'} on both hosts.")
    else:
        checks.add(
            "nx_flag",
            FAIL if v["mode"] == Mode.LIVE else WARN,
            f"The NX (no-execute) flag is {'on' if a else 'off'} on {src.name} but "
            f"{'on' if b else 'off'} on {dst.name}. Set it the same in both hosts' firmware.",
        )


def _check_clash(checks, v, dom, source, target):
    by_uuid, by_name = target.find_domain(uuid=v["uuid"], name=v["name"])
    if by_uuid:
        checks.add(
            "name_clash",
            FAIL,
            f"{v['target'].name} already has a VM with this one's UUID: an earlier copy was "
            "left there. Remove it (after checking it is not the one in use) and try again.",
        )
    elif by_name:
        checks.add(
            "name_clash",
            FAIL,
            f"{v['target'].name} already has a different VM named {v['name']}. Rename one of them first.",
        )
    else:
        checks.add("name_clash", PASS, f"No VM named {v['name']} on {v['target'].name}.")


def _check_networks(checks, v, dom, source, target):
    tname = v["target"].name
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
            f"{tname} lacks {', '.join(missing)} that {v['name']} is connected to. Create it on "
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
        checks.add("networks", PASS, f"{v['name']} has no network interfaces to match.")


def _check_storage(checks, v, dom, source, target):
    disks = dom.info.movable_disks()
    if not disks:
        checks.add("storage", PASS, f"{v['name']} has no disks to move.")
        return
    if v["storage"] == StorageMode.SHARED:
        _check_shared_storage(checks, v, disks, source, target)
    else:
        _check_copy_storage(checks, v, disks, source, target)


def _check_shared_storage(checks, v, disks, source, target):
    tname = v["target"].name
    seen_in = {}  # disk path -> the pool the target sees it in
    for disk in disks:
        seen = target.volume_by_path(disk.path)
        seen_in[disk.path] = seen[0] if seen else ""
        if seen is None:
            checks.add(
                "shared_storage",
                FAIL,
                f"{disk.path} is not visible on {tname}: the shared storage is not mounted there, "
                "or not defined as a storage pool. Mount it at the same path (else the guest meets "
                "'Input/output error'), or choose 'copy the disks'.",
            )
            return
    # The same path on both hosts is not proof of sharing: two local disks
    # can have the same path. Write a probe on the source, look on the target.
    probe_pool = next((d.pool for d in disks if d.pool), "")
    if not probe_pool:
        checks.add(
            "shared_storage",
            WARN,
            f"{tname} sees the same disk paths, but they are not in a storage pool on the "
            "source, so kvmweb cannot prove they are the same files. Make sure they are shared.",
        )
        return
    proof = (
        PoolSharing.objects.filter(host=v["source"], pool=probe_pool, peer=v["target"], shared=True)
        .filter(checked_at__gte=timezone.now() - timedelta(seconds=SHARED_PROOF_SECONDS))
        .first()
    )
    if proof is not None:
        checks.add(
            "shared_storage",
            PASS,
            f"The disks are on shared storage: {tname} sees them, and a probe volume kvmweb wrote in pool "
            f"{probe_pool} {(timezone.now() - proof.checked_at).total_seconds():.0f} s ago showed the pool "
            f"shared with {tname} (kvmweb writes one again after {SHARED_PROOF_SECONDS // 60} minutes).",
        )
        return
    probe = f".kvmweb-probe-{uuidlib.uuid4().hex}"
    path = source.create_volume(probe_pool, probe, 1024, "raw")
    try:
        appeared = target.volume_by_path(path)
        shared = appeared is not None
    finally:
        with contextlib.suppress(HostError):
            source.delete_volume(path)
        with contextlib.suppress(HostError):
            target.volume_by_path(path)  # refreshes the target's pools after the delete
    # Kept for the host pages: which pools are shared with which hosts, as proved.
    probe_disk = next(d for d in disks if d.pool == probe_pool)
    PoolSharing.record(
        v["source"], probe_pool, v["target"], appeared[0] if appeared else seen_in[probe_disk.path], shared
    )
    # Even a dry run writes this probe: say so, with its name, so nobody is
    # surprised by a volume appearing and going in the pool's history.
    wrote = f"kvmweb wrote a 1 KiB probe volume {probe} in pool {probe_pool} on {v['source'].name} and deleted it again"
    if shared:
        checks.add(
            "shared_storage",
            PASS,
            f"The disks are on shared storage: {wrote}; {tname} saw it appear.",
        )
    else:
        checks.add(
            "shared_storage",
            FAIL,
            f"The disk paths exist on {tname} too, but they are different files ({wrote}; it did "
            f"not appear on {tname}): the storage is not shared. Choose 'copy the disks', or mount "
            "the real share on both hosts.",
        )


def _check_copy_storage(checks, v, disks, source, target):
    tname = v["target"].name
    pool = target.pool(v["target_pool"])
    if pool is None:
        checks.add("target_pool", FAIL, f"{tname} has no storage pool named {v['target_pool']}.")
        return
    if not pool.active:
        checks.add(
            "target_pool",
            FAIL,
            f"Pool {pool.name} on {tname} is not active (its storage may not be mounted). Start it first.",
        )
        return
    need = sum(d.allocation or d.capacity or 0 for d in disks)
    full = sum(d.capacity or 0 for d in disks)
    if need > pool.available:
        checks.add(
            "free_space",
            FAIL,
            f"Pool {pool.name} on {tname} has {size(pool.available)} free; the disks hold "
            f"{size(need)}. Free space there or choose another pool.",
        )
    elif full > pool.available:
        checks.add(
            "free_space",
            WARN,
            f"Pool {pool.name} has room for the disks' data ({size(need)}) but not for them "
            f"to grow to their full size ({size(full)}).",
        )
    else:
        checks.add("free_space", PASS, f"Pool {pool.name} on {tname} has {size(pool.available)} free for {size(need)}.")
    clashes = [
        d.path.rsplit("/", 1)[-1]
        for d in disks
        if target.volume_by_path(f"{pool.target_path.rstrip('/')}/{d.path.rsplit('/', 1)[-1]}", refresh=False)
        is not None
    ]
    if clashes:
        clashes = _replace_own_leftovers(checks, v, pool, clashes, target)
    if clashes:
        checks.add("target_volumes", FAIL, clash_message(v["target"], pool.name, clashes))


def clash_message(host: Host, pool: str, names: list[str]) -> str:
    """Why a copy cannot go into ``pool`` on ``host``, naming each same-named
    volume as the host page lists it and the action that removes a leftover."""
    from hosts.volumes import leftovers

    found = {x.name: x for x in leftovers(host) if x.pool == pool}
    parts = []
    for name in names:
        x = found.get(name)
        if x is None:
            parts.append(f"{name} (not a leftover kvmweb knows: a VM there may use it; check it on {host.name})")
        else:
            parts.append(f"{name} ({x.reason})")
    removable = [n for n in names if n in found]
    action = (
        f" Remove the leftover on {host.name}'s page (Leftover volumes), or POST "
        f'{{"pool": "{pool}", "name": "{removable[0]}"}} to /api/hosts/{host.pk}/remove-volume/, then try again.'
        if removable
        else " Remove or rename it on the host first, or choose another pool."
    )
    return f"Pool {pool} on {host.name} already has a volume named {', '.join(parts)}.{action}"


def _replace_own_leftovers(checks, v, pool, clashes, target):
    """An evacuation's return (``replace_own_leftovers``) first removes the VM's
    own leftover: a same-named volume an earlier move of this same VM recorded
    leaving on the target, which no definition there uses. Returns the clashes left."""
    # The engine's own instance: a note written through another would be lost
    # when the engine writes its next one.
    migration = v["record"]
    if migration is None or not migration.replace_own_leftovers:
        return clashes
    from hosts.volumes import shared_pool_names, used_paths

    from .engine.source_copy import own_leftovers

    host = v["target"]
    used = used_paths(host, pool.name, shared_pool_names(host))
    own = [p for p in own_leftovers(migration, pool.target_path, clashes) if p not in used]
    removed = []
    for path in own:
        try:
            if target.delete_volume(path):
                removed.append(path.rsplit("/", 1)[-1])
        except HostError as e:
            checks.add("target_volumes", WARN, f"Could not remove {v['name']}'s own leftover {path}: {e.plain}")
    if removed:
        message = (
            f"Removed {v['name']}'s own leftover {', '.join(removed)} from pool {pool.name} on {host.name} "
            "(an earlier move of this VM recorded leaving it there) to make room for the copy."
        )
        migration.note(message, AuditAction.VOLUME, on_host=host.name, volumes=own)
        checks.add("target_volumes", PASS, message)
    return [c for c in clashes if c not in removed]


def _check_memory(checks, v, dom, source, target):
    guest = capacity.Guest.of(dom.info)
    if v["mode"] == Mode.COLD and not dom.active:
        # It stays shut off on the target: nothing is promised, but say whether it could start there.
        stays = f"{v['name']} is shut off and stays so on {v['target'].name}"
        for r in capacity_results(v["target"], guest, v["migration"], free=target.free_memory()):
            if r.result == PASS:
                checks.add(r.name, PASS, f"{stays}; it could start there: {r.message}")
            else:
                checks.add(
                    r.name, WARN, f"{stays}, so it needs nothing there now, but it could not start there: {r.message}"
                )
        return
    checks.results.extend(capacity_results(v["target"], guest, v["migration"], free=target.free_memory()))


def capacity_results(
    host: Any, guest: capacity.Guest, exclude_migration: int | None = None, free: int | None = None
) -> list[CheckResult]:
    """Whether ``host`` can hold ``guest`` on top of what it has promised (hosts/capacity.py):
    memory (or huge pages) fail when it cannot, vCPUs only warn. ``free``: the host's
    free memory now, when it was asked. The claim that starts a migration asks this too."""
    cap = capacity.for_host(host, exclude_migration)
    if guest.hugepage_kib:
        memory = _hugepages_result(host, guest, exclude_migration)
    else:
        memory = _memory_result(host, guest, cap, free)
    return [memory, _vcpus_result(host, guest, cap)]


def _promised_to(cap):
    if cap.incoming > 1:
        return f"the guests it runs and the {cap.incoming} on their way there"
    return "the guests it runs" + (" and the one on its way there" if cap.incoming else "")


def _memory_result(host, guest, cap, free):
    name, need = guest.name, guest.max_memory
    if not cap.memory_fits(guest):
        return CheckResult(
            "memory",
            FAIL,
            f"{host.name} cannot hold {name}: {size(cap.memory_committed)} of the {size(cap.memory_capacity)} "
            f"it can give guests is already promised to {_promised_to(cap)}, and {name} may use up to "
            f"{size(need)}. Choose another host; or, if {host.name} can really hold more, lower its reserved "
            "memory or raise its memory allocation ratio.",
        )
    if free is not None and need > free:
        return CheckResult(
            "memory",
            FAIL,
            f"{host.name} has {size(free)} of memory free now and {name} may use up to {size(need)}. "
            "Free memory there or choose another host.",
        )
    room = cap.memory_room - need
    if room < cap.memory_capacity * 0.1 or (free is not None and need * 1.2 > free):
        return CheckResult(
            "memory",
            WARN,
            f"{host.name} can hold {name} ({size(need)}), leaving little room: {size(max(room, 0))} of its "
            f"{size(cap.memory_capacity)} unpromised afterwards"
            + (f", {size(free)} free now." if free is not None else "."),
        )
    return CheckResult(
        "memory",
        PASS,
        f"{host.name} has {size(cap.memory_room)} of its {size(cap.memory_capacity)} for guests unpromised "
        f"for {name}'s {size(need)}" + (f" ({size(free)} free now)." if free is not None else "."),
    )


def _hugepages_result(host, guest, exclude_migration):
    pages = capacity.hugepages_for(host, guest.hugepage_kib, exclude_migration)
    page_size = size(guest.hugepage_kib * 1024)
    need = capacity.pages_for(guest)
    if not pages.pool:
        return CheckResult(
            "hugepages",
            FAIL,
            f"{guest.name}'s memory is backed by huge pages of {page_size}, and {host.name} has none of that size. "
            f"Set some aside on {host.name} (vm.nr_hugepages, or hugepages= at boot) or choose another host.",
        )
    if not pages.fits(guest):
        return CheckResult(
            "hugepages",
            FAIL,
            f"{host.name} cannot hold {guest.name}: {pages.committed} of its {pages.pool} huge pages of {page_size} "
            f"are already promised to the guests it runs or that are on their way there, and {guest.name} "
            f"needs {need}. Choose another host, or set more huge pages aside there.",
        )
    return CheckResult(
        "hugepages",
        PASS,
        f"{host.name} has {pages.pool - pages.committed} of its {pages.pool} huge pages of {page_size} unpromised; "
        f"{guest.name} needs {need}.",
    )


def _vcpus_result(host, guest, cap):
    after = cap.vcpus_committed + guest.vcpus
    if not cap.vcpus_fit(guest):
        return CheckResult(
            "vcpus",
            WARN,
            f"{host.name} would run {after} vCPUs on its {cap.cpu_count} CPUs, more than its vCPU "
            f"allocation ratio of {cap.cpu_ratio:g} allows ({cap.vcpu_capacity}): its guests will be slower. "
            "Choose a host with fewer vCPUs promised if they need their speed.",
        )
    return CheckResult(
        "vcpus",
        PASS,
        f"{host.name} would run {after} vCPUs on its {cap.cpu_count} CPUs (at most {cap.vcpu_capacity}).",
    )


def _check_convergence(checks, v, dom, source, target):
    if v["mode"] != Mode.LIVE:
        return
    policy = get_policy(v["policy"])
    memory = dom.info.memory
    bandwidth = v["bandwidth_mib"]
    last = (
        Migration.objects.filter(domain_uuid=v["uuid"], mode=Mode.LIVE)
        .exclude(stats={})
        .filter(status__in=[Status.SUCCEEDED, Status.FAILED])
        .order_by("-finished_at")
        .first()
    )
    if bandwidth and memory / (bandwidth * MiB) > policy.deadline_seconds:
        checks.add(
            "convergence",
            WARN,
            f"At {bandwidth} MiB/s the first pass over {size(memory)} of memory alone takes "
            f"{memory / (bandwidth * MiB):.0f} s, longer than the policy's deadline of "
            f"{policy.deadline_seconds} s: it will be aborted. Raise the bandwidth limit.",
        )
        return
    if last and last.stats.get("dirty_rate_bps") and last.stats.get("speed_bps"):
        dirty = last.stats["dirty_rate_bps"]
        speed = min(last.stats["speed_bps"], (bandwidth or 1 << 40) * MiB)
        if outpaced(dirty, speed):
            checks.add(
                "convergence",
                WARN,
                f"When it last moved (migration #{last.pk}) {v['name']} dirtied memory at "
                f"{size(dirty)}/s while {size(last.stats['speed_bps'])}/s could be sent: it may not "
                "converge. Choose the 'Make it converge' policy, raise the bandwidth, or migrate it cold.",
            )
            return
    checks.add(
        "convergence",
        PASS,
        f"kvmweb watches the dirty rate from the second pass and applies the "
        f"'{policy.label}' policy; it gives up after {policy.deadline_seconds} s, leaving the VM "
        "on the source.",
    )
