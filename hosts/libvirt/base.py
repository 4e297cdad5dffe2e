"""What every part of a Connection shares: the libvirt handle, the host's URI,
and the translating call."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from .errors import translating
from .types import DomainState

T = TypeVar("T")

DOMAIN_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: DomainState.NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.BLOCKED,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.PMSUSPENDED,
}


def domain_state(code: int) -> DomainState:
    return DOMAIN_STATES.get(code, DomainState.NOSTATE)


def text(node: ET.Element | None, path: str, default: str = "") -> str:
    """The text of the element at path under node, or default."""
    found = node.find(path) if node is not None else None
    return found.text if found is not None and found.text is not None else default


class Ops:
    """The state the parts of a Connection (inventory, domains, storage,
    migration) share. Use ``open_host`` to get a Connection."""

    def __init__(self, uri: str, conn: libvirt.virConnect) -> None:
        self.uri = uri
        self._conn = conn

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args), its libvirt error translated to a HostError."""
        with translating(self.uri):
            return fn(*args)

    def _dom(self, uuid: object) -> libvirt.virDomain:
        return self.call(self._conn.lookupByUUIDString, str(uuid))
