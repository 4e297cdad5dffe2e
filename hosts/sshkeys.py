"""kvmweb's own SSH identity and its own known_hosts.

kvmweb logs in to hypervisors with a key of its own (generated on first use
under ``KVMWEB_VAR_DIR``, or the one ``KVMWEB_SSH_KEY`` names) and trusts only
the host keys an operator confirmed, kept in a known_hosts file of its own:
never the SSH setup of whatever account runs it.

Programs run from argument lists only; a host name reaches ``ssh-keyscan`` only
after the URI allowlist accepted it (so it cannot be taken for an option).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import socket
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

# The order kvmweb prefers when a host offers several host keys.
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")
SCAN_TYPES = "ed25519,ecdsa,rsa"

_lock = threading.Lock()


class SSHKeyError(Exception):
    """Something about kvmweb's key or a host key, said in plain words."""

    def __init__(self, plain: str, detail: str = "") -> None:
        super().__init__(plain)
        self.plain = plain
        self.detail = detail


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def ssh_dir() -> Path:
    return _private_dir(Path(settings.VAR_DIR) / "ssh")


def key_path() -> Path:
    """kvmweb's private key, generated (ed25519, mode 0600) on first use unless KVMWEB_SSH_KEY names one."""
    configured = settings.KVMWEB_SSH_KEY
    if configured:
        path = Path(configured)
        if not path.is_file() or not Path(f"{path}.pub").is_file():
            raise SSHKeyError(
                f"KVMWEB_SSH_KEY names {path}, but that key (or its .pub beside it) is missing. "
                "Point it at an existing private key, or unset it to let kvmweb make its own."
            )
        return path
    path = ssh_dir() / "id_ed25519"
    with _lock:
        if not path.is_file():
            _generate(path)
    return path


def _generate(path: Path) -> None:
    # ssh-keygen refuses to overwrite; a half-made pair from a crash is removed first.
    for stale in (path, Path(f"{path}.pub")):
        stale.unlink(missing_ok=True)
    comment = f"kvmweb@{socket.gethostname()}"
    proc = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode:
        raise SSHKeyError("kvmweb could not make its SSH key with ssh-keygen.", proc.stderr.strip())
    os.chmod(path, 0o600)


def public_key() -> str:
    """kvmweb's public key line, as it goes into a host's authorized_keys."""
    return Path(f"{key_path()}.pub").read_text().strip()


def authorized_keys_line() -> str:
    """The one shell line an administrator runs on a host to let kvmweb in as root."""
    return f"echo '{public_key()}' >> /root/.ssh/authorized_keys"


SSH_CONFIG = """\
# Written by kvmweb: how it logs in to hypervisors. Neither ~/.ssh/config nor
# /etc/ssh/ssh_config is read (ssh -F), so nothing outside kvmweb changes this.
Host *
    IdentityFile {key}
    IdentitiesOnly yes
    UserKnownHostsFile {known_hosts}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
    HashKnownHosts no
    BatchMode yes
    PasswordAuthentication no
    KbdInteractiveAuthentication no
    ForwardAgent no
    ForwardX11 no
    ClearAllForwardings yes
    ControlMaster no
    ControlPath none
    ProxyCommand none
    # A host that accepts the connection and never answers: give up after the
    # connect timeout (it covers the handshake too), not never; one that stops
    # answering later: after 15 s.
    ConnectTimeout {connect_timeout}
    ServerAliveInterval 5
    ServerAliveCountMax 3
"""


def _ssh_quote(path: Path | str) -> str:
    text = str(path)
    if any(c in text for c in '"\n\\'):
        raise SSHKeyError(f"kvmweb cannot use the path {text!r} in its ssh configuration.")
    return f'"{text}"'


def _write_if_changed(path: Path, text: str, mode: int) -> None:
    try:
        if path.read_text() == text and stat.S_IMODE(path.stat().st_mode) == mode:
            return
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def ssh_command() -> Path:
    """The program libvirt runs as "ssh" for kvmweb's own connections.

    libvirt's OpenSSH transport takes no known_hosts option, and its libssh
    transport freezes in a client that runs libvirt's event loop in a thread
    (seen here: a call that never returns, a crash). So kvmweb runs OpenSSH
    with a configuration of its own: its key, its known_hosts, nothing asked.
    """
    directory = ssh_dir()
    config = directory / "ssh_config"
    _write_if_changed(
        config,
        SSH_CONFIG.format(
            key=_ssh_quote(key_path()),
            known_hosts=_ssh_quote(known_hosts_path()),
            connect_timeout=int(settings.KVMWEB_CONNECT_TIMEOUT),
        ),
        0o600,
    )
    wrapper = directory / "ssh"
    _write_if_changed(wrapper, f'#!/bin/sh\nexec ssh -F {shlex.quote(str(config))} "$@"\n', 0o700)
    return wrapper


def known_hosts_path() -> Path:
    path = ssh_dir() / "known_hosts"
    if not path.exists():
        write_known_hosts([])
    return path


def known_hosts_name(host: str, port: int | None) -> str:
    """How known_hosts names a host: the bare name on port 22, else [name]:port."""
    return host if port in (None, 22) else f"[{host}]:{port}"


def write_known_hosts(entries: Iterable[tuple[str, int | None, str]]) -> None:
    """Replace kvmweb's known_hosts with entries: (host, port, key line)."""
    lines = []
    for host, port, key in sorted(entries, key=lambda e: (e[0], e[1] or 0, e[2])):
        kind, blob = parse_key(key)
        lines.append(f"{known_hosts_name(host, port)} {kind} {blob}\n")
    directory = ssh_dir()
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".known_hosts.")
    with os.fdopen(fd, "w") as f:
        f.writelines(lines)
    os.chmod(tmp, 0o600)
    os.replace(tmp, directory / "known_hosts")


def parse_key(key: str) -> tuple[str, str]:
    """(type, base64 blob) of a public key line; raise SSHKeyError if it is not one."""
    fields = (key or "").split()
    if len(fields) < 2 or fields[0] not in KEY_TYPES:
        raise SSHKeyError(f"'{key[:60]}' is not an SSH public key kvmweb accepts.")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except ValueError:
        raise SSHKeyError("The SSH public key is not valid base64.") from None
    return fields[0], base64.b64encode(blob).decode()


def fingerprint(key: str) -> str:
    """SHA256:... of a public key line, as ssh-keygen -l and ssh print it."""
    _, blob = parse_key(key)
    digest = hashlib.sha256(base64.b64decode(blob)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def same_fingerprint(a: str | None, b: str | None) -> bool:
    """Compare fingerprints as a person would copy them (with or without 'SHA256:', '=' padding)."""

    def norm(value: str | None) -> str:
        value = (value or "").strip()
        if value.upper().startswith("SHA256:"):
            value = value[7:]
        return value.rstrip("=")

    return bool(norm(a)) and norm(a) == norm(b)


def scan(host: str, port: int | None = None, timeout: float = 5) -> str:
    """The host key a host offers now (the type kvmweb prefers), fetched with ssh-keyscan."""
    port = port or 22
    proc = subprocess.run(
        ["ssh-keyscan", "-T", str(max(1, int(timeout))), "-p", str(port), "-t", SCAN_TYPES, host],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout * 3 + 5,
    )
    offered: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#") and fields[1] in KEY_TYPES:
            offered.setdefault(fields[1], f"{fields[1]} {fields[2]}")
    for kind in KEY_TYPES:
        if kind in offered:
            return offered[kind]
    raise SSHKeyError(
        f"kvmweb could not fetch the SSH host key of {host} (port {port}): check that the host is up "
        "and sshd listens there.",
        proc.stderr.strip(),
    )
