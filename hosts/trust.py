"""An operator confirms a host's SSH host key: the one way a key becomes trusted
after registration (the other is a fingerprint pinned when registering)."""

from __future__ import annotations

import contextlib

from django.conf import settings

from core.roles import AnyUser

from . import sshkeys, sync
from .models import Host, HostKeyRefused, HostKeyState, write_known_hosts
from .signals import host_key_confirmed


def confirm_host_key(host: Host, fingerprint: str | None, user: AnyUser) -> sync.SyncResult:
    """Trust the key the host offers if its fingerprint is the one given; then read the host.

    Raises HostKeyRefused (saying why) when the fingerprint is not the one the
    host offers. Recorded in the audit log.
    """
    fingerprint = (fingerprint or "").strip()
    if host.uses_ssh and not host.ssh_offered_key and host.host_key_state != HostKeyState.TRUSTED:
        # Nothing fetched yet (the host did not answer at registration): ask it now.
        parsed = host.parsed_uri()
        assert parsed is not None  # uses_ssh: the URI is allowed
        with contextlib.suppress(sshkeys.SSHKeyError):
            host.offer_host_key(sshkeys.scan(parsed.host, parsed.port, timeout=settings.KVMWEB_CONNECT_TIMEOUT))
    host.trust_host_key(fingerprint)
    host.save(update_fields=host.SSH_FIELDS)
    write_known_hosts()
    host_key_confirmed.send(sender=type(host), host=host, user=user)  # the audit log's entry (migrations_app.inventory)
    return sync.sync_host(host)


__all__ = ["HostKeyRefused", "confirm_host_key"]
