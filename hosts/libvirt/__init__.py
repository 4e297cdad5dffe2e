"""The one seam between kvmweb and libvirt.

Only this package imports the ``libvirt`` binding. It opens a connection per
piece of work and closes it afterwards, turns every libvirt error into a
``HostError`` in plain words, and hands plain dataclasses to the rest of the
code, never ``virDomain`` or ``virConnect`` objects.

- ``uri``: a URI's form, and whether its host answers (no binding needed)
- ``types``: the dataclasses and the names for libvirt's numbers (no binding)
- ``errors``: ``HostError``, ``translate`` and the ``translated`` wrapper
- ``connection``: ``open_host`` and ``Connection``, made of
  ``inventory`` (read-only), ``domains`` (define, start, stop, undefine),
  ``storage`` (volumes and their streams) and ``migration`` (migrate, job
  statistics, abort, flags)
- ``events``: ``watch``, a long-lived connection reporting a host's domain
  events as ``DomainEvent`` and ``ConnectionClosed`` (for ``watch_hosts``)

Read callers' names from here: ``from hosts.libvirt import open_host, HostError``.
The names that need the binding are loaded on first use, so importing this
package for a URI check or a dataclass does not load libvirt.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .certs import certificate_problem
from .errors import PEER_LOGIN_CODES, HostError, HostUnreachable, InvalidURI, VolumeStreamError, translate
from .types import (
    POSTCOPY_ACTIVE,
    POSTCOPY_FAILED,
    CpuComparison,
    DiskInfo,
    DomainDetails,
    DomainInfo,
    DomainState,
    HostInfo,
    InterfaceInfo,
    Inventory,
    JobStats,
    NetworkInfo,
    PoolInfo,
)
from .uri import HostURI, allowed, check_hypervisor_network, check_uri, probe, reachable, refused, validate_uri

if TYPE_CHECKING:
    from .connection import Connection, keep_connections, open_host, open_hosts
    from .events import ConnectionClosed, DomainEvent, HostWatch, watch
    from .migration import FLAG_NAMES, migration_flags, rewrite_disk_paths

_LAZY = {
    "Connection": "connection",
    "open_host": "connection",
    "open_hosts": "connection",
    "keep_connections": "connection",
    "ConnectionClosed": "events",
    "DomainEvent": "events",
    "HostWatch": "events",
    "watch": "events",
    "FLAG_NAMES": "migration",
    "migration_flags": "migration",
    "rewrite_disk_paths": "migration",
}

__all__ = [
    "POSTCOPY_ACTIVE",
    "POSTCOPY_FAILED",
    "HostURI",
    "certificate_problem",
    "allowed",
    "check_uri",
    "probe",
    "refused",
    "FLAG_NAMES",
    "Connection",
    "ConnectionClosed",
    "CpuComparison",
    "DiskInfo",
    "DomainDetails",
    "DomainEvent",
    "DomainInfo",
    "DomainState",
    "HostError",
    "HostInfo",
    "HostWatch",
    "HostUnreachable",
    "InterfaceInfo",
    "InvalidURI",
    "Inventory",
    "JobStats",
    "NetworkInfo",
    "PEER_LOGIN_CODES",
    "PoolInfo",
    "VolumeStreamError",
    "migration_flags",
    "open_host",
    "open_hosts",
    "keep_connections",
    "reachable",
    "rewrite_disk_paths",
    "translate",
    "validate_uri",
    "check_hypervisor_network",
    "watch",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
