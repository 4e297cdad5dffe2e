"""Registering a host: one place for the API and the Hosts page, so both
validate (HostSerializer), audit and read the new host the same way."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from . import sync
from .models import Host


def register(serializer: Any, user: AbstractBaseUser | AnonymousUser) -> Host:
    """Save a validated HostSerializer, record it in the audit log, read the host.

    An unreachable host is still registered: it shows offline with the reason,
    and the periodic refresh picks it up once it answers."""
    from migrations_app.models import AuditAction, AuditEntry

    host: Host = serializer.save()
    AuditEntry.record(
        AuditAction.REGISTER,
        f"Registered host {host.name} at {host.uri}"
        + (f", its SSH host key pinned: {host.ssh_fingerprint}" if host.ssh_fingerprint else ""),
        user=user,
        host=host.name,
        uri=host.uri,
    )
    # A failure answers after the same time whatever it was (sync_host_evenly).
    sync.sync_host_evenly(host)
    return host
