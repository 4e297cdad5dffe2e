"""SSH and TLS for the lab's hosts, set up the way an administrator would.

SSH: every host runs its own ``sshd`` (Debian's openssh-server) on its own
address, with its own host key; root logs in by key only. Each host's root has
its own client key and its own ``~/.ssh`` (a private bind mount over
``/root/.ssh`` inside the host), so that "host-to-host keys" mean what they mean
on real hypervisors: the source host's root key authorised on the target, and
the target's host key in the source's ``known_hosts``.

TLS: a CA per lab, a certificate per host (its name and address in the
subject alternative names, usable as server and as client, so that a
peer-to-peer migration over ``qemu+tls`` authenticates the source host to the
target), and a client certificate for kvmweb in the layout libvirt's
``pkipath`` expects (``cacert.pem``, ``clientcert.pem``, ``clientkey.pem``).
Inside a host the files are where libvirt looks by default (``/etc/pki/CA``,
``/etc/pki/libvirt``, and QEMU's ``/etc/pki/qemu`` for migration streams over
TLS), through a private bind mount over ``/etc/pki``.

All programs run from argument lists; nothing goes through a shell.
"""

import os
import subprocess
import tempfile

SSHD_CONFIG = """\
# kvmweb lab host {host}: root by key only, nothing else
ListenAddress {address}
Port 22
HostKey {key}
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
AcceptEnv LANG
"""

CA_TEMPLATE = """\
cn = "kvmweb lab {lab} CA"
ca
cert_signing_key
expiration_days = 3650
"""

HOST_TEMPLATE = """\
organization = "kvmweb lab {lab}"
cn = "{host}"
dns_name = "{host}"
ip_address = "{address}"
tls_www_server
tls_www_client
encryption_key
signing_key
expiration_days = 3650
"""

CLIENT_TEMPLATE = """\
organization = "kvmweb lab {lab}"
cn = "kvmweb"
tls_www_client
encryption_key
signing_key
expiration_days = 3650
"""


class AccessError(RuntimeError):
    pass


def _run(cmd, timeout=60):
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise AccessError("%s failed (%d): %s" % (cmd[0], proc.returncode, proc.stderr.strip()))
    return proc.stdout


def write(path, text, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def _read(path):
    with open(path) as f:
        return f.read()


# ---------------------------------------------------------------------- SSH


def make_ssh_key(path, comment):
    """An ed25519 key pair at path and path.pub (replaced if present)."""
    for p in (path, path + ".pub"):
        if os.path.exists(p):
            os.unlink(p)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
    return _read(path + ".pub").strip()


def fingerprint(public_key_file):
    """SHA256:... of a public key file, as ssh-keygen -l prints it."""
    out = _run(["ssh-keygen", "-l", "-E", "sha256", "-f", public_key_file])
    return out.split()[1]


def prepare_ssh(hdir, host, address):
    """Host key, sshd_config and root's private ~/.ssh for one host.

    Layout under the host's directory (seen from the root namespace):
    ``ssh/`` (sshd_config, host key) and ``root-ssh/`` (mounted on /root/.ssh
    inside the host: id_ed25519, authorized_keys, known_hosts).
    """
    sshdir = os.path.join(hdir, "ssh")
    rootssh = os.path.join(hdir, "root-ssh")
    os.makedirs(sshdir, mode=0o700)
    os.makedirs(rootssh, mode=0o700)
    key = os.path.join(sshdir, "ssh_host_ed25519_key")
    make_ssh_key(key, "host key of %s" % host)
    make_ssh_key(os.path.join(rootssh, "id_ed25519"), "root@%s" % host)
    write(os.path.join(sshdir, "sshd_config"), SSHD_CONFIG.format(host=host, address=address, key=key), 0o600)
    write(os.path.join(rootssh, "authorized_keys"), "")
    write(os.path.join(rootssh, "known_hosts"), "", 0o644)


# ---------------------------------------------------------------------- TLS


def _certtool(*args):
    return _run(["certtool", *args])


def _sign(workdir, key, template_text, ca_key, ca_cert, out):
    template = os.path.join(workdir, os.path.basename(out) + ".info")
    write(template, template_text)
    _certtool(
        "--generate-certificate",
        "--load-privkey",
        key,
        "--load-ca-certificate",
        ca_cert,
        "--load-ca-privkey",
        ca_key,
        "--template",
        template,
        "--outfile",
        out,
    )


def _privkey(path):
    _certtool("--generate-privkey", "--key-type=rsa", "--bits=2048", "--outfile", path)
    os.chmod(path, 0o600)


def make_ca(pki, lab):
    """The lab's CA (pki/ca-key.pem, pki/cacert.pem) and kvmweb's client directory pki/client/."""
    os.makedirs(pki, mode=0o700, exist_ok=True)
    ca_key = os.path.join(pki, "ca-key.pem")
    ca_cert = os.path.join(pki, "cacert.pem")
    _privkey(ca_key)
    with tempfile.TemporaryDirectory(dir=pki) as work:
        template = os.path.join(work, "ca.info")
        write(template, CA_TEMPLATE.format(lab=lab))
        _certtool("--generate-self-signed", "--load-privkey", ca_key, "--template", template, "--outfile", ca_cert)
        client = os.path.join(pki, "client")
        os.makedirs(client, mode=0o700, exist_ok=True)
        key = os.path.join(client, "clientkey.pem")
        _privkey(key)
        _sign(work, key, CLIENT_TEMPLATE.format(lab=lab), ca_key, ca_cert, os.path.join(client, "clientcert.pem"))
        write(os.path.join(client, "cacert.pem"), _read(ca_cert), 0o644)
    return client


def prepare_tls(pki, hdir, lab, host, address):
    """The host's /etc/pki: CA certificate, and one key and certificate used as server and client."""
    root = os.path.join(hdir, "pki")
    for sub in ("CA", "libvirt/private"):
        os.makedirs(os.path.join(root, sub), mode=0o755)
    os.chmod(os.path.join(root, "libvirt", "private"), 0o700)
    write(os.path.join(root, "CA", "cacert.pem"), _read(os.path.join(pki, "cacert.pem")), 0o644)
    key = os.path.join(root, "libvirt", "private", "serverkey.pem")
    cert = os.path.join(root, "libvirt", "servercert.pem")
    _privkey(key)
    with tempfile.TemporaryDirectory(dir=pki) as work:
        _sign(
            work,
            key,
            HOST_TEMPLATE.format(lab=lab, host=host, address=address),
            os.path.join(pki, "ca-key.pem"),
            os.path.join(pki, "cacert.pem"),
            cert,
        )
    # The same pair serves when this host is the client of a peer-to-peer migration.
    write(os.path.join(root, "libvirt", "private", "clientkey.pem"), _read(key), 0o600)
    write(os.path.join(root, "libvirt", "clientcert.pem"), _read(cert), 0o644)
    # QEMU's own TLS directory (qemu.conf's default_tls_x509_cert_dir), for a
    # migration stream over TLS (VIR_MIGRATE_TLS): the target's QEMU serves
    # with the host's certificate and the source's QEMU presents it as client.
    qemu = os.path.join(root, "qemu")
    os.makedirs(qemu, mode=0o755)
    write(os.path.join(qemu, "ca-cert.pem"), _read(os.path.join(pki, "cacert.pem")), 0o644)
    for role in ("server", "client"):
        write(os.path.join(qemu, role + "-cert.pem"), _read(cert), 0o644)
        write(os.path.join(qemu, role + "-key.pem"), _read(key), 0o600)
