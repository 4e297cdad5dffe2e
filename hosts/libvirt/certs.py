"""Whether a host's TLS certificate is good for a migration stream to it.

A migration over TLS (VIR_MIGRATE_TLS) makes the source's QEMU check the
target's certificate against the address the data goes to. When the
certificate does not name that address, libvirt reports only that QEMU
"unexpectedly closed the monitor: Cannot read from TLS channel" after the
target's QEMU was started. Asked before, the target's libvirtd (whose
certificate the hosts' QEMU normally shares, see /etc/pki/qemu) answers in a
second with the reason. No binding needed: this is a plain TLS handshake.
"""

from __future__ import annotations

import os
import socket
import ssl

from django.conf import settings

from .uri import DEFAULT_PORTS, check_uri

# Where libvirt's clients look without a pkipath (libvirt's defaults).
SYSTEM_CA = "/etc/pki/CA/cacert.pem"


def _context() -> ssl.SSLContext:
    tls_dir = settings.KVMWEB_TLS_DIR
    ca = os.path.join(tls_dir, "cacert.pem") if tls_dir else SYSTEM_CA
    context = ssl.create_default_context(cafile=ca)
    if tls_dir and os.path.exists(os.path.join(tls_dir, "clientcert.pem")):
        # libvirtd asks for a client certificate by default and drops the handshake without one.
        context.load_cert_chain(os.path.join(tls_dir, "clientcert.pem"), os.path.join(tls_dir, "clientkey.pem"))
    return context


def certificate_problem(uri: str, address: str, timeout: float = 5.0) -> tuple[str, str] | None:
    """Why the certificate the host at ``uri`` (a qemu+tls URI) shows is not good for TLS
    connections to ``address``: (kind, libvirt-free detail), kind "name" (it does not name the
    address), "trust" (not signed by the CA kvmweb trusts, or expired), "unchecked" (no answer, no
    CA file). None when it is good."""
    parsed = check_uri(uri)
    port = parsed.port or DEFAULT_PORTS["tls"]
    try:
        context = _context()
    except (OSError, ssl.SSLError) as e:
        return "unchecked", str(e)
    try:
        with socket.create_connection((parsed.host, port), timeout=timeout) as raw:
            # server_hostname: the migration's address, an IP or a name; ssl
            # matches it against the certificate's subject alternative names.
            with context.wrap_socket(raw, server_hostname=address):
                return None
    except ssl.SSLCertVerificationError as e:
        kind = "name" if "mismatch" in (e.verify_message or "").lower() else "trust"
        return kind, e.verify_message or str(e)
    except (OSError, ssl.SSLError) as e:
        return "unchecked", str(e)
