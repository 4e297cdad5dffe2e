"""Simulated KVM hosts on one machine, each running a real libvirtd.

A host is a network namespace joined to a bridge in the root namespace, plus a
private mount and UTS namespace in which ``/run`` is a tmpfs and private copies
are bind-mounted over ``/etc/libvirt``, ``/etc/hosts``, ``/var/lib/libvirt``,
``/var/log/libvirt`` and ``/var/cache/libvirt``. Its daemons run under
``tini -s``: PID 1 on these machines does not reap orphans, and libvirt hangs
waiting on zombie QEMU processes without a reaper (``define`` and ``start``
hang for 15-30 s, or for good).

Everything a lab creates is named after the lab's NAME, so several labs (the
demo, a test run, another engineer's test run) live side by side. The state
directory records what ``up`` made; ``down`` removes exactly that.
"""

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid

from . import access, image

# Three, so that an evacuation plan has a choice of target.
DEFAULT_HOSTS = ("kvm01", "kvm02", "kvm03")
LIBVIRT_PORT = 16509
LIBVIRT_TLS_PORT = 16514
SSH_PORT = 22
SUBNET_BASE = ipaddress.ip_network("10.213.0.0/16")
SERIAL_LOG_DIR = "/var/log/libvirt/qemu"  # inside a host; a private bind mount
LOCAL_POOL_DIR = "/var/lib/libvirt/images"  # same path, different content per host
HOST_UUID_NS = uuid.UUID("6f1d4c1e-6a53-4cbb-9d0c-4b7a3b0f6e21")
TICK_RE = re.compile(r"tick (\d+) (\d+(?:\.\d+)?)\s*$")
DAEMON_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


class LabError(RuntimeError):
    pass


def state_root():
    return os.environ.get("KVMWEB_LAB_DIR", "/var/lib/kvmweb-lab")


def default_name():
    return os.environ.get("KVMWEB_LAB_NAME") or "demo"


def _run(cmd, check=True, timeout=60):
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode:
        raise LabError("%s failed (%d): %s" % (" ".join(cmd), proc.returncode, proc.stderr.strip()))
    return proc


def _libvirt():
    import libvirt  # imported late: the module must load where libvirt is absent

    return libvirt


def tcp_reachable(address, port=LIBVIRT_PORT, timeout=2.0):
    """True if a TCP connection to address:port opens within timeout."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _in_thread(func, timeout):
    """Run func in a daemon thread; return its result or raise TimeoutError."""
    box = {}

    def target():
        try:
            box["value"] = func()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError("no answer within %.0f s" % timeout)
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _ns_inode(path):
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _proc_state(pid):
    """Process state letter ('R', 'S', 'Z', ...) or None if gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2]


def _alive(pid):
    state = _proc_state(pid)
    return state is not None and state not in "ZX"


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _is_mounted(path):
    """True if something is mounted at path, even a FUSE mount whose daemon died."""
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 1 and re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1]) == path:
                return True
    return False


def _same_files(a, b):
    names = sorted(os.listdir(a))
    if names != sorted(os.listdir(b)):
        return False
    for name in names:
        with open(os.path.join(a, name), "rb") as fa, open(os.path.join(b, name), "rb") as fb:
            if fa.read() != fb.read():
                return False
    return True


def _pids_in_netns(inode):
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            if _ns_inode("/proc/%s/ns/net" % entry) == inode:
                pids.append(int(entry))
    return pids


class Lab:
    """A named set of simulated hosts. See the module docstring."""

    def __init__(self, name=None, hosts=DEFAULT_HOSTS, no_bridge_on=()):
        name = name or default_name()
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", name):
            raise ValueError("lab name must be lower-case letters, digits and '-': %r" % name)
        self.name = name
        self.dir = os.path.join(state_root(), name)
        self.shared_dir = os.path.join(self.dir, "nfs-share")
        self.export_dir = os.path.join(self.dir, "nfs-export")
        self.tag = hashlib.sha1(name.encode()).hexdigest()[:8]
        self._want_hosts = [h for h in hosts]
        self._want_no_bridge = set(no_bridge_on)
        for h in self._want_hosts:
            if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", h):
                raise ValueError("bad host name %r" % h)
        self._procs = {}  # host -> Popen of its holder, when this process started it

    # ------------------------------------------------------------------ state

    @property
    def _state_file(self):
        return os.path.join(self.dir, "state.json")

    def _load(self):
        try:
            with open(self._state_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _save(self, state):
        os.makedirs(self.dir, exist_ok=True)
        tmp = self._state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f, indent=2)
        os.replace(tmp, self._state_file)

    @property
    def _state(self):
        state = self._load()
        if state is None:
            raise LabError("lab %r is not up (no %s)" % (self.name, self._state_file))
        return state

    @contextlib.contextmanager
    def _lock(self):
        os.makedirs(state_root(), exist_ok=True)
        with open(os.path.join(state_root(), ".%s.lock" % self.name), "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    @property
    def hosts(self):
        state = self._load()
        return list(state["hosts"]) if state else list(self._want_hosts)

    def _host(self, host):
        hosts = self._state["hosts"]
        if host not in hosts:
            raise LabError("no host %r in lab %r" % (host, self.name))
        return hosts[host]

    def address(self, host):
        return self._host(host)["address"]

    def uri(self, host):
        return "qemu+tcp://%s/system" % self.address(host)

    def ssh_uri(self, host):
        return "qemu+ssh://root@%s/system" % self.address(host)

    def tls_uri(self, host):
        return "qemu+tls://%s/system" % self.address(host)

    @property
    def pki_dir(self):
        return os.path.join(self.dir, "pki")

    @property
    def tls_client_dir(self):
        """kvmweb's client certificate directory (cacert.pem, clientcert.pem, clientkey.pem)."""
        return os.path.join(self.pki_dir, "client")

    # ------------------------------------------------------------------ SSH

    def ssh_host_key(self, host):
        """The host's SSH host public key line ("ssh-ed25519 AAAA... comment")."""
        with open(os.path.join(self.host_dir(host), "ssh", "ssh_host_ed25519_key.pub")) as f:
            return f.read().strip()

    def ssh_fingerprint(self, host):
        """SHA256:... of the host's SSH host key."""
        return access.fingerprint(os.path.join(self.host_dir(host), "ssh", "ssh_host_ed25519_key.pub"))

    def root_public_key(self, host):
        """The public key of root on that host (what it offers to the other hosts)."""
        with open(os.path.join(self.host_dir(host), "root-ssh", "id_ed25519.pub")) as f:
            return f.read().strip()

    def authorize_key(self, host, public_key):
        """Let whoever holds public_key's private key log in as root on host (idempotent)."""
        public_key = public_key.strip()
        if "\n" in public_key or not public_key:
            raise ValueError("one public key line, please")
        path = os.path.join(self.host_dir(host), "ssh", "authorized_extra")
        with self._lock():
            keys = self._lines(path)
            if public_key not in keys:
                keys.append(public_key)
                access.write(path, "".join(k + "\n" for k in keys))
            self._write_peer_ssh()

    def set_peer_ssh(self, keys=True, known_hosts=True):
        """Host-to-host SSH, as administrators set it up for peer-to-peer migration.

        keys: each host's root key authorised for root on every other host;
        known_hosts: every other host's host key (by name and address) in each
        host's root known_hosts. Both on after up(); a test turns them off to
        see a migration fail for want of them, and back on afterwards.
        """
        with self._lock():
            state = self._state
            state["peer_ssh"] = {"keys": bool(keys), "known_hosts": bool(known_hosts)}
            self._save(state)
            self._write_peer_ssh()

    def rotate_ssh_host_key(self, host):
        """Give host a new SSH host key (as a reinstall would) and tell the other hosts.

        Returns the new fingerprint. kvmweb's own known_hosts is not touched:
        that is what the changed-key test is about."""
        key = os.path.join(self.host_dir(host), "ssh", "ssh_host_ed25519_key")
        with self._lock():
            access.make_ssh_key(key, "host key of %s" % host)
            self._write_peer_ssh()
        self._control(host, "reload-sshd")
        # sshd re-executes itself on SIGHUP: wait until it serves the new key.
        want = self.ssh_host_key(host).split()[1]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            proc = _run(
                ["ssh-keyscan", "-T", "2", "-t", "ed25519", "-p", str(SSH_PORT), self.address(host)],
                check=False,
                timeout=10,
            )
            if want in proc.stdout:
                return self.ssh_fingerprint(host)
            time.sleep(0.2)
        raise LabError("sshd on %s did not take its new host key" % host)

    @staticmethod
    def _lines(path):
        try:
            with open(path) as f:
                return [line.strip() for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def _write_peer_ssh(self):
        state = self._state
        peer = state.get("peer_ssh") or {}
        hosts = list(state["hosts"])
        for host in hosts:
            rootssh = os.path.join(self.host_dir(host), "root-ssh")
            authorized = self._lines(os.path.join(self.host_dir(host), "ssh", "authorized_extra"))
            known = []
            for other in hosts:
                if other == host:
                    continue
                if peer.get("keys"):
                    authorized.append(self.root_public_key(other))
                if peer.get("known_hosts"):
                    address = state["hosts"][other]["address"]
                    known.append("%s,%s %s" % (other, address, " ".join(self.ssh_host_key(other).split()[:2])))
            access.write(os.path.join(rootssh, "authorized_keys"), "".join(k + "\n" for k in authorized))
            access.write(os.path.join(rootssh, "known_hosts"), "".join(k + "\n" for k in known), 0o644)

    def host_dir(self, host):
        """The host's private files, seen from the root namespace."""
        return os.path.join(self.dir, "hosts", host)

    def has_bridge(self, host):
        return self._host(host)["br0"]

    def netns(self, host):
        return "kvmweb-%s-%s" % (self.name, host)

    def _names(self, hosts):
        """Interface names (15 characters at most) for this lab."""
        return {
            "bridge": "kvmlab%s" % self.tag,
            "veth": {h: "kl%sv%d" % (self.tag, i) for i, h in enumerate(hosts)},
        }

    # ------------------------------------------------------------------- up

    def is_up(self):
        state = self._load()
        if not state or not _is_mounted(self.shared_dir):
            return False
        for info in state["hosts"].values():
            pid = info.get("pid")
            inode = _ns_inode("/run/netns/%s" % info["netns"])
            if not pid or inode is None or not _alive(pid):
                return False
            if _ns_inode("/proc/%d/ns/net" % pid) != inode:
                return False
        return True

    def up(self, timeout=120):
        """Start the lab, or leave it be if it is already up. Returns status()."""
        with self._lock():
            if self.is_up() and self._load().get("ready"):
                self._repair()
                return self.status()
            if self._load() or self._leftovers():
                self._teardown()
            try:
                self._start(timeout)
            except BaseException:
                self._teardown()
                raise
        return self.status()

    def _repair(self):
        """On a lab that is up: plug cut links back in, restart stopped libvirtds."""
        for host in self.hosts:
            self.restore_link(host)
        for host in self.hosts:
            if not self.answers(host, timeout=5) and self._daemon_pid(host, "libvirtd") is None:
                self.start_libvirtd(host)

    def _leftovers(self):
        names = self._names(self._want_hosts)
        if os.path.exists("/sys/class/net/%s" % names["bridge"]):
            return True
        if _is_mounted(self.shared_dir):
            return True
        return any(os.path.exists("/run/netns/%s" % self.netns(h)) for h in self._want_hosts)

    def _pick_subnet(self):
        """A /24 of 10.213.0.0/16 chosen from the name, skipping any in use."""
        used = []
        out = _run(["ip", "-4", "-o", "addr", "show"]).stdout
        used += re.findall(r"inet (\S+)", out)
        out = _run(["ip", "-4", "route", "show", "table", "all"]).stdout
        used += [line.split()[0] for line in out.splitlines() if line and line[0].isdigit()]
        nets = []
        for item in used:
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                pass
        root = state_root()
        for other in os.listdir(root) if os.path.isdir(root) else ():
            if other == self.name:
                continue
            try:
                with open(os.path.join(root, other, "state.json")) as f:
                    nets.append(ipaddress.ip_network(json.load(f)["subnet"]))
            except (OSError, ValueError, KeyError):
                pass
        start = int(self.tag, 16) % 250
        for i in range(250):
            third = 2 + (start + i) % 250
            net = ipaddress.ip_network("10.213.%d.0/24" % third)
            if not any(net.overlaps(n) for n in nets):
                return net
        raise LabError("no free /24 in %s" % SUBNET_BASE)

    def _start(self, timeout):
        started = time.monotonic()
        kernel, initrd = image.guest_kernel()
        hosts = self._want_hosts
        names = self._names(hosts)
        with _global_lock():
            subnet = self._pick_subnet()
            addrs = list(subnet.hosts())
            state = {
                "name": self.name,
                "subnet": str(subnet),
                "bridge": names["bridge"],
                "bridge_address": str(addrs[0]),
                "shared_dir": self.shared_dir,
                "owner_pid": os.getpid(),
                "ready": False,
                "hosts": {},
            }
            for i, host in enumerate(hosts):
                state["hosts"][host] = {
                    "address": str(addrs[10 + i]),
                    "netns": self.netns(host),
                    "veth": names["veth"][host],
                    "br0": host not in self._want_no_bridge,
                    "host_uuid": str(uuid.uuid5(HOST_UUID_NS, "%s/%s" % (self.name, host))),
                    "pid": None,
                }
            self._save(state)
            br = names["bridge"]
            _run(["ip", "link", "add", br, "type", "bridge"])
            _run(["ip", "addr", "add", "%s/24" % addrs[0], "dev", br])
            _run(["ip", "link", "set", br, "up"])
        state["share_pid"] = self._mount_share()
        self._save(state)
        access.make_ca(self.pki_dir, self.name)
        for host, info in state["hosts"].items():
            self._prepare_files(host, state)
            self._make_netns(host, info, br)
        for host, info in state["hosts"].items():
            info["pid"] = self._spawn_holder(host, info)
            self._save(state)
        deadline = started + timeout
        for host, info in state["hosts"].items():
            self._wait_answer(host, info["address"], deadline)
            for port in (SSH_PORT, LIBVIRT_TLS_PORT):
                self._wait_port(host, info["address"], port, deadline)
        # Probe QEMU on every host at once (the first probe takes seconds),
        # then keep the result for the next lab.
        errors = []

        def setup(host):
            try:
                self._setup_host(host, state)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=setup, args=(h,)) for h in hosts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        self._save_caps_cache(hosts[0])
        state["peer_ssh"] = {"keys": True, "known_hosts": True}
        self._save(state)
        self._write_peer_ssh()
        state["ready"] = True
        state["up_seconds"] = round(time.monotonic() - started, 1)
        self._save(state)
        del kernel, initrd

    def _prepare_files(self, host, state):
        hdir = self.host_dir(host)
        if os.path.exists(hdir):
            shutil.rmtree(hdir)
        os.makedirs(hdir)
        etc = os.path.join(hdir, "etc-libvirt")
        shutil.copytree("/etc/libvirt", etc, symlinks=True)
        # No libvirt network may autostart: `default` would fight over
        # virbr0 and dnsmasq with the other hosts.
        netdir = os.path.join(etc, "qemu", "networks")
        shutil.rmtree(netdir, ignore_errors=True)
        os.makedirs(os.path.join(netdir, "autostart"))
        for sub in ("qemu", "storage"):
            for entry in ("autostart",):
                shutil.rmtree(os.path.join(etc, sub, entry), ignore_errors=True)
        for path in os.listdir(os.path.join(etc, "qemu")):
            if path.endswith(".xml"):
                os.unlink(os.path.join(etc, "qemu", path))
        shutil.rmtree(os.path.join(etc, "storage"), ignore_errors=True)
        info = state["hosts"][host]
        with open(os.path.join(etc, "libvirtd.conf"), "w") as f:
            f.write(
                "# kvmweb lab host %s of lab %s\n"
                'listen_tls = 1\nlisten_tcp = 1\nauth_tcp = "none"\n'
                'tcp_port = "%d"\n'
                'host_uuid = "%s"\n'
                'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n'
                "keepalive_interval = 5\nkeepalive_count = 5\n" % (host, self.name, LIBVIRT_PORT, info["host_uuid"])
            )
        with open(os.path.join(etc, "qemu.conf"), "w") as f:
            # Root, no relabelling and no cgroups: the hosts share one kernel
            # and one filesystem, and a relabel on one host would change
            # files that the other host's guests use. swtpm runs as root too:
            # its state lives under the host's private /var/lib/libvirt.
            f.write(
                'user = "root"\ngroup = "root"\n'
                'swtpm_user = "root"\nswtpm_group = "root"\n'
                "dynamic_ownership = 0\nremember_owner = 0\n"
                'security_driver = "none"\n'
                "cgroup_controllers = [ ]\n"
                'stdio_handler = "logd"\n'
                'vnc_listen = "127.0.0.1"\n'
            )
        hosts_lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        for other, oinfo in state["hosts"].items():
            hosts_lines.append("%s\t%s" % (oinfo["address"], other))
        with open(os.path.join(hdir, "hosts"), "w") as f:
            f.write("\n".join(hosts_lines) + "\n")
        for sub in ("lib/images", "lib/qemu", "lib/boot", "log/qemu", "cache/qemu"):
            os.makedirs(os.path.join(hdir, sub))
        caps = os.path.join(image.cache_dir(), "qemu-capabilities")
        if os.path.isdir(caps):
            shutil.copytree(caps, os.path.join(hdir, "cache", "qemu", "capabilities"))
        access.prepare_ssh(hdir, host, info["address"])
        access.prepare_tls(self.pki_dir, hdir, self.name, host, info["address"])
        os.mkfifo(os.path.join(hdir, "control"))
        with open(os.path.join(hdir, "holder.sh"), "w") as f:
            f.write(HOLDER_SCRIPT.format(hdir=hdir, host=host))

    def _mount_share(self):
        """Mount the shared directory, the lab's stand-in for NFS.

        libvirt 9.0 refuses a live migration of a disk on a local file system
        ("Migration without shared storage is unsafe") and has no setting to
        call a directory shared. It does recognise FUSE mounts of type
        fuse.glusterfs as a cluster file system, so the export is mirrored
        with bindfs under that type. Mounted in the root namespace before
        the hosts start, so every host inherits it at the same path.
        """
        os.makedirs(self.export_dir, exist_ok=True)
        os.makedirs(self.shared_dir, exist_ok=True)
        log = open(os.path.join(self.dir, "share.log"), "ab")
        try:
            proc = subprocess.Popen(
                ["bindfs", "-f", "-o", "subtype=glusterfs,allow_other", self.export_dir, self.shared_dir],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                close_fds=True,
                start_new_session=True,
                env=DAEMON_ENV,
            )
        finally:
            log.close()
        self._procs["<share>"] = proc
        end = time.monotonic() + 10
        while not _is_mounted(self.shared_dir):
            if proc.poll() is not None or time.monotonic() > end:
                raise LabError("could not mount the shared directory; see %s" % os.path.join(self.dir, "share.log"))
            time.sleep(0.05)
        return proc.pid

    def _unmount_share(self, pid):
        for _ in range(3):
            if not _is_mounted(self.shared_dir):
                break
            if _run(["umount", self.shared_dir], check=False).returncode:
                _run(["umount", "-l", self.shared_dir], check=False)
        proc = self._procs.get("<share>")
        if pid and _alive(pid) and _cmdline(pid)[:1] == ["bindfs"] and self.shared_dir in _cmdline(pid):
            end = time.monotonic() + 5
            while _alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def _make_netns(self, host, info, bridge):
        ns, veth = info["netns"], info["veth"]
        _run(["ip", "netns", "add", ns])
        _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        _run(["ip", "link", "set", veth, "master", bridge])
        _run(["ip", "link", "set", veth, "up"])
        nsx = ["ip", "netns", "exec", ns]
        _run(nsx + ["ip", "link", "set", "lo", "up"])
        _run(nsx + ["ip", "addr", "add", "%s/24" % info["address"], "dev", "eth0"])
        _run(nsx + ["ip", "link", "set", "eth0", "up"])
        if info["br0"]:
            # br0 with an uplink port, as `virsh iface-bridge ens33 br0`
            # would make it: with a port it has a carrier and shows active.
            # The uplink leads nowhere (a veth whose other end is unplugged
            # from everything); this kernel has no dummy interfaces.
            _run(nsx + ["ip", "link", "add", "br0", "type", "bridge"])
            _run(nsx + ["ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth1-end"])
            _run(nsx + ["ip", "link", "set", "eth1", "master", "br0"])
            _run(nsx + ["ip", "link", "set", "eth1-end", "up"])
            _run(nsx + ["ip", "link", "set", "eth1", "up"])
            _run(nsx + ["ip", "link", "set", "br0", "up"])

    def _spawn_holder(self, host, info):
        hdir = self.host_dir(host)
        log = open(os.path.join(hdir, "holder.log"), "ab")
        try:
            proc = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    info["netns"],
                    "unshare",
                    "--mount",
                    "--uts",
                    "--propagation",
                    "private",
                    "tini",
                    "-s",
                    "--",
                    "sh",
                    os.path.join(hdir, "holder.sh"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                close_fds=True,
                start_new_session=True,
                env=DAEMON_ENV,
            )
        finally:
            log.close()
        self._procs[host] = proc
        return proc.pid

    def _wait_answer(self, host, address, deadline):
        while time.monotonic() < deadline:
            if tcp_reachable(address, timeout=1):
                return
            pid = self._state["hosts"][host]["pid"]
            if pid and not _alive(pid):
                raise LabError(
                    "host %s died while starting; see %s" % (host, os.path.join(self.host_dir(host), "holder.log"))
                )
            time.sleep(0.2)
        raise LabError("libvirtd on %s did not answer at %s:%d" % (host, address, LIBVIRT_PORT))

    def _wait_port(self, host, address, port, deadline):
        while not tcp_reachable(address, port, timeout=1):
            if time.monotonic() > deadline:
                raise LabError(
                    "%s:%d (%s) did not answer; see %s"
                    % (address, port, host, os.path.join(self.host_dir(host), "holder.log"))
                )
            time.sleep(0.1)

    def _setup_host(self, host, state):
        with self.connection(host, timeout=30) as conn:
            # The first QEMU capability probe takes seconds: do it now.
            conn.getDomainCapabilities(None, "x86_64", None, "qemu", 0)
            self._define_pool(conn, "shared", self.shared_dir)
            self._define_pool(conn, "local", LOCAL_POOL_DIR)
            if state["hosts"][host]["br0"]:
                net = conn.networkDefineXML(
                    "<network><name>lab-net</name><forward mode='bridge'/><bridge name='br0'/></network>"
                )
                net.setAutostart(1)
                net.create()

    @staticmethod
    def _define_pool(conn, name, path):
        pool = conn.storagePoolDefineXML(
            "<pool type='dir'><name>%s</name><target><path>%s</path></target></pool>" % (name, path), 0
        )
        pool.setAutostart(1)
        pool.create(0)

    def _save_caps_cache(self, host):
        """Keep the host's QEMU capabilities for the next lab (a fresh probe takes seconds)."""
        src = os.path.join(self.host_dir(host), "cache", "qemu", "capabilities")
        dest = os.path.join(image.cache_dir(), "qemu-capabilities")
        if not os.path.isdir(src) or not os.listdir(src):
            return
        if os.path.isdir(dest) and _same_files(src, dest):
            return
        tmp = dest + ".%d" % os.getpid()
        shutil.copytree(src, tmp)
        shutil.rmtree(dest, ignore_errors=True)
        try:
            os.rename(tmp, dest)
        except OSError:  # another lab saved it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------------ down

    def down(self):
        """Stop everything this lab started and remove its namespaces and files."""
        with self._lock():
            self._teardown()

    def _teardown(self):
        state = self._load() or {}
        hosts = state.get("hosts") or {h: {"netns": self.netns(h), "pid": None} for h in self._want_hosts}
        names = self._names(list(hosts))
        for host, info in hosts.items():
            self._stop_host(host, info)
        for host, info in hosts.items():
            ns = info.get("netns") or self.netns(host)
            if os.path.exists("/run/netns/%s" % ns):
                _run(["ip", "netns", "del", ns], check=False)
            veth = info.get("veth") or names["veth"].get(host)
            if veth and os.path.exists("/sys/class/net/%s" % veth):
                _run(["ip", "link", "del", veth], check=False)
        bridge = state.get("bridge") or names["bridge"]
        if os.path.exists("/sys/class/net/%s" % bridge):
            _run(["ip", "link", "del", bridge], check=False)
        self._unmount_share(state.get("share_pid"))
        if os.path.isdir(self.dir) and not _is_mounted(self.shared_dir):
            shutil.rmtree(self.dir, ignore_errors=True)
        self._procs.clear()

    def _stop_host(self, host, info):
        """Kill every process in the host's network namespace, holder last.

        The holder (tini) reaps the others, so they leave no zombies; the
        holder itself is reaped here if this process started it.
        """
        inode = _ns_inode("/run/netns/%s" % (info.get("netns") or self.netns(host)))
        holder = info.get("pid")
        if holder and inode is not None and _ns_inode("/proc/%d/ns/net" % holder) != inode:
            holder = None  # a recycled pid: not ours
        if inode is None:
            return
        keep = set()
        if holder:
            keep.add(holder)
            keep.update(self._children(holder, comm="sh"))
        for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):
            victims = [p for p in _pids_in_netns(inode) if p not in keep and _alive(p)]
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            end = time.monotonic() + wait
            while time.monotonic() < end:
                if not any(_proc_state(p) for p in victims):
                    break
                time.sleep(0.05)
        # The holder's shell first: tini reaps it and exits by itself. Killing
        # both at once would orphan the shell to PID 1 as a zombie for good.
        for pid in keep - {holder}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + 5
        while holder and _alive(holder) and time.monotonic() < end:
            time.sleep(0.05)
        if holder and _alive(holder):
            with contextlib.suppress(ProcessLookupError):
                os.kill(holder, signal.SIGKILL)
        proc = self._procs.get(host)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        end = time.monotonic() + 10
        while time.monotonic() < end and any(_alive(p) for p in _pids_in_netns(inode)):
            time.sleep(0.05)

    @staticmethod
    def _children(pid, comm=None):
        kids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as f:
                    data = f.read()
            except OSError:
                continue
            ppid = int(data[data.rindex(")") + 2 :].split()[1])
            if ppid == pid and (comm is None or data[data.index("(") + 1 : data.rindex(")")] == comm):
                kids.append(int(entry))
        return kids

    # ---------------------------------------------------------------- status

    def answers(self, host, timeout=5.0):
        """True if the host's libvirtd accepts a connection and answers."""
        address = self.address(host)
        if not tcp_reachable(address, timeout=min(timeout, 2.0)):
            return False
        try:
            conn = self.connect(host, timeout=timeout)
        except Exception:
            return False
        try:
            return bool(_in_thread(conn.getHostname, timeout))
        except Exception:
            return False
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def status(self):
        state = self._load()
        result = {
            "name": self.name,
            "dir": self.dir,
            "up": bool(state) and self.is_up(),
            "shared_dir": self.shared_dir,
            "hosts": {},
        }
        if not state:
            return result
        result.update(subnet=state["subnet"], bridge=state["bridge"], up_seconds=state.get("up_seconds"))
        hosts = state["hosts"]

        def check(host):
            info = hosts[host]
            link = "down"
            with contextlib.suppress(OSError):
                with open("/sys/class/net/%s/operstate" % info["veth"]) as f:
                    link = f.read().strip()
            result["hosts"][host] = {
                "address": info["address"],
                "uri": self.uri(host),
                "ssh_uri": self.ssh_uri(host),
                "tls_uri": self.tls_uri(host),
                "ssh_fingerprint": self.ssh_fingerprint(host),
                "netns": info["netns"],
                "pid": info["pid"],
                "br0": info["br0"],
                "link": link,
                "libvirtd": self.answers(host, timeout=5) if result["up"] else False,
            }

        threads = [threading.Thread(target=check, args=(h,)) for h in hosts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        result["hosts"] = {h: result["hosts"][h] for h in hosts}
        return result

    # ------------------------------------------------------------ connections

    def connect(self, host, timeout=10.0):
        """libvirt connection to a host, failing within about timeout seconds."""
        libvirt = _libvirt()
        address = self.address(host)
        if not tcp_reachable(address, timeout=min(timeout, 3.0)):
            raise LabError("%s (%s) is unreachable" % (host, address))
        return _in_thread(lambda: libvirt.open(self.uri(host)), timeout)

    @contextlib.contextmanager
    def connection(self, host, timeout=10.0):
        conn = self.connect(host, timeout)
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def _holder_pid(self, host):
        pid = self._host(host)["pid"]
        if not pid or not _alive(pid):
            raise LabError("host %s is not running" % host)
        return pid

    def host_exec(self, host, *argv, timeout=30):
        """Run a command inside a host's network, mount and UTS namespaces.

        For tests that change one host only: a bridge that exists on one
        side, a small filesystem under a storage pool."""
        pid = self._holder_pid(host)
        return _run(["nsenter", "-t", str(pid), "-n", "-m", "-u", "--", *argv], timeout=timeout)

    def _control(self, host, command):
        self._holder_pid(host)
        fd = os.open(os.path.join(self.host_dir(host), "control"), os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, (command + "\n").encode())
        finally:
            os.close(fd)

    def _daemon_pid(self, host, daemon):
        root = "/proc/%d/root" % self._holder_pid(host)
        try:
            with open("%s/run/%s.pid" % (root, daemon)) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def stop_libvirtd(self, host, timeout=20):
        """Stop the host's libvirtd; its running guests keep running."""
        pid = self._daemon_pid(host, "libvirtd")
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not _alive(pid):
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    def start_libvirtd(self, host, timeout=60):
        """Start the host's libvirtd again (under the host's reaper) and wait for it."""
        if self._daemon_pid(host, "libvirtd") is None:
            self._control(host, "start-libvirtd")
        deadline = time.monotonic() + timeout
        self._wait_answer(host, self.address(host), deadline)
        while time.monotonic() < deadline:
            if self.answers(host, timeout=5):
                return
            time.sleep(0.2)
        raise LabError("libvirtd on %s did not come back" % host)

    def cut_link(self, host):
        """Unplug the host: unreachable from the root namespace and the other hosts."""
        _run(["ip", "link", "set", self._host(host)["veth"], "down"])

    def restore_link(self, host):
        _run(["ip", "link", "set", self._host(host)["veth"], "up"])

    # ---------------------------------------------------------------- guests

    @staticmethod
    def guest_kernel():
        return image.guest_kernel()

    def serial_log(self, host, name):
        """Where the guest's serial log is, seen from the root namespace."""
        return os.path.join(self.host_dir(host), "log", "qemu", "%s-serial.log" % name)

    def make_guest(
        self,
        host,
        name,
        memory_mib=256,
        disk=None,
        disk_mib=64,
        dirty_mib=0,
        dirty_rate_mib=0,
        bridge=True,
        start=True,
        extra_devices=(),
        os_extra="",
    ):
        """Define a guest persistently on host; start it and wait for it to tick.

        ``extra_devices`` are more <devices> children and ``os_extra`` more <os>
        children, as tests/lab/devices.py writes them (CD-ROM, VNC, UEFI...)."""
        if disk not in (None, "shared", "local"):
            raise ValueError("disk must be None, 'shared' or 'local'")
        if bridge and not self.has_bridge(host):
            raise LabError("host %s has no br0 (it was started without the bridge)" % host)
        kernel, initrd = image.guest_kernel()
        cmdline = "console=ttyS0 quiet panic=-1"
        if dirty_mib:
            cmdline += " dirty_mib=%d dirty_rate=%d" % (dirty_mib, dirty_rate_mib)
        devices = []
        with self.connection(host) as conn:
            if name in [d.name() for d in conn.listAllDomains(0)]:
                raise LabError("a domain named %s already exists on %s" % (name, host))
            if disk:
                pool = conn.storagePoolLookupByName(disk)
                pool.refresh(0)
                vol = pool.createXML(
                    "<volume><name>%s.qcow2</name><capacity unit='MiB'>%d</capacity>"
                    "<target><format type='qcow2'/></target></volume>" % (name, disk_mib),
                    0,
                )
                devices.append(
                    "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                    "<source file='%s'/><target dev='vda' bus='virtio'/></disk>" % vol.path()
                )
            if bridge:
                devices.append("<interface type='bridge'><source bridge='br0'/><model type='virtio'/></interface>")
            devices.extend(extra_devices)
            xml = GUEST_XML.format(
                os_extra=os_extra,
                name=name,
                memory=memory_mib,
                kernel=kernel,
                initrd=initrd,
                cmdline=cmdline,
                devices="\n    ".join(devices),
                log="%s/%s-serial.log" % (SERIAL_LOG_DIR, name),
            )
            before = self.last_tick(name)
            dom = conn.defineXML(xml)
            if start:
                dom.create()
        if start:
            self.wait_ticking(name, timeout=60, _before=before)
        return name

    def _tick_from(self, path):
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 16384))
                data = f.read().decode("utf-8", "replace")
        except OSError:
            return None
        lines = data.split("\n")[:-1]  # the last piece is not a whole line yet
        for line in reversed(lines):
            match = TICK_RE.search(line.rstrip("\r"))
            if match:
                return int(match.group(1)), float(match.group(2))
        return None

    def last_tick(self, name):
        """(tick, uptime) of the last whole tick line in the freshest serial log."""
        logs = []
        for host in self.hosts:
            path = self.serial_log(host, name)
            with contextlib.suppress(OSError):
                logs.append((os.stat(path).st_mtime_ns, path))
        for _, path in sorted(logs, reverse=True):
            tick = self._tick_from(path)
            if tick is not None:
                return tick
        return None

    def wait_ticking(self, name, timeout=60, _before=None):
        """Wait until a new tick line appears; returns it."""
        before = self.last_tick(name) if _before is None else _before
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tick = self.last_tick(name)
            if tick is not None and tick != before:
                return tick
            time.sleep(0.25)
        raise LabError("guest %s did not tick within %d s (last: %r)" % (name, timeout, before))

    def where(self, name):
        """Hosts on which a domain of that name is running (normally one)."""
        running = []
        for host in self.hosts:
            with contextlib.suppress(Exception):
                with self.connection(host, timeout=5) as conn:
                    if conn.lookupByName(name).isActive():
                        running.append(host)
        return running

    def remove_guest(self, name):
        """Destroy and undefine the guest and delete its volumes, on every host."""
        libvirt = _libvirt()
        volumes = {"%s.qcow2" % name}
        for host in self.hosts:
            try:
                conn = self.connect(host, timeout=5)
            except Exception:
                continue
            try:
                # Look names up in lists rather than by name, so that an
                # absent guest does not print libvirt errors.
                for dom in conn.listAllDomains(0):
                    if dom.name() != name:
                        continue
                    for path in re.findall(r"<source file='([^']+)'", dom.XMLDesc(0)):
                        volumes.add(os.path.basename(path))
                    with contextlib.suppress(libvirt.libvirtError):
                        if dom.isActive():
                            dom.destroy()
                    with contextlib.suppress(libvirt.libvirtError):
                        if dom.isPersistent():
                            dom.undefineFlags(
                                libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                                | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                                | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                                | libvirt.VIR_DOMAIN_UNDEFINE_TPM
                            )
                for pool in conn.listAllStoragePools(0):
                    if pool.name() not in ("shared", "local") or not pool.isActive():
                        continue
                    with contextlib.suppress(libvirt.libvirtError):
                        pool.refresh(0)
                        for vol in pool.listAllVolumes(0):
                            if vol.name() in volumes:
                                vol.delete(0)
            finally:
                with contextlib.suppress(Exception):
                    conn.close()
        for host in self.hosts:
            with contextlib.suppress(OSError):
                os.unlink(self.serial_log(host, name))


@contextlib.contextmanager
def _global_lock():
    os.makedirs(state_root(), exist_ok=True)
    with open(os.path.join(state_root(), ".subnets.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


HOLDER_SCRIPT = """\
# The host's first process inside its own mount and UTS namespaces; tini (-s)
# is its parent and reaps every orphan the daemons leave.
set -e
H='{hdir}'
mount -t tmpfs -o mode=0755 lab-run /run
mkdir -p /run/lock
mount --bind "$H/etc-libvirt" /etc/libvirt
mount --bind "$H/hosts" /etc/hosts
mount --bind "$H/lib" /var/lib/libvirt
mount --bind "$H/log" /var/log/libvirt
mount --bind "$H/cache" /var/cache/libvirt
# root's own ~/.ssh and /etc/pki on this host (the mount points are made
# once on the machine; what is mounted on them is private to the host)
mkdir -p -m 0700 /root/.ssh
mkdir -p /etc/pki
mount --bind "$H/root-ssh" /root/.ssh
mount --bind "$H/pki" /etc/pki
mkdir -p /run/sshd
hostname '{host}'
virtlogd -d
libvirtd -d --listen
/usr/sbin/sshd -f "$H/ssh/sshd_config"
set +e
echo "host {host} started"
# Commands from the lab (stop/start of libvirtd): daemons started from here
# stay below tini, so their orphans are reaped.
exec 3<>"$H/control"
while read -r cmd <&3; do
    case "$cmd" in
        start-libvirtd) libvirtd -d --listen ;;
        start-virtlogd) virtlogd -d ;;
        reload-sshd) kill -HUP "$(cat /run/sshd.pid)" ;;
        exit) exit 0 ;;
    esac
done
"""

GUEST_XML = """\
<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory}</memory>
  <currentMemory unit='MiB'>{memory}</currentMemory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
    {os_extra}
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>qemu64</model>
  </cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    {devices}
    <serial type='pty'>
      <log file='{log}' append='on'/>
      <target port='0'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <memballoon model='none'/>
  </devices>
</domain>
"""
