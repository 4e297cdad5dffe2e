"""Registering a host: one place for the API and the Hosts page, so both
validate (HostSerializer), audit and read the new host the same way."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from . import sync
from .models import Host
from .signals import host_registered


def register(serializer: Any, user: AbstractBaseUser | AnonymousUser) -> Host:
    """Save a validated HostSerializer, record it in the audit log, read the host.

    An unreachable host is still registered: it shows offline with the reason,
    and the periodic refresh picks it up once it answers."""
    host: Host = serializer.save()
    host_registered.send(sender=Host, host=host, user=user)  # the audit log's entry (migrations_app.inventory)
    # A failure answers after the same time whatever it was (sync_host_evenly).
    sync.sync_host_evenly(host)
    return host
