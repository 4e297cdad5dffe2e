"""The part of a Connection that defines, starts, stops and removes domains."""

from __future__ import annotations

import libvirt

from .base import Ops, domain_state
from .errors import HostError, translated
from .types import DomainState


class DomainOps(Ops):
    def find_domain(self, uuid: object = None, name: str | None = None) -> tuple[bool, bool]:
        """(uuid found, name found) without raising for absent domains."""
        by_uuid = by_name = False
        for dom in self.call(self._conn.listAllDomains):
            by_uuid = by_uuid or (uuid is not None and dom.UUIDString() == str(uuid))
            by_name = by_name or (name is not None and dom.name() == name)
        return by_uuid, by_name

    @translated(absent=(libvirt.VIR_ERR_NO_DOMAIN,), default=None)
    def state(self, uuid: object) -> DomainState | None:
        """The domain's state, or None if it is not defined here."""
        state, _reason = self._conn.lookupByUUIDString(str(uuid)).state()
        return domain_state(state)

    def is_persistent(self, uuid: object) -> bool:
        return bool(self.call(self._dom(uuid).isPersistent))

    def domain_xml(self, uuid: object, inactive: bool = True) -> str:
        """The definition to recreate the domain elsewhere. Secure: it may hold
        passwords (VNC, SPICE), so it is never logged or audited."""
        flags = libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE
        if inactive:
            flags |= libvirt.VIR_DOMAIN_XML_INACTIVE
        return str(self.call(self._dom(uuid).XMLDesc, flags))

    def define(self, xml: str) -> str:
        """Define a domain from its XML; returns its UUID."""
        return str(self.call(self._conn.defineXML, xml).UUIDString())

    def start(self, uuid: object) -> None:
        self.call(self._dom(uuid).create)

    def shutdown(self, uuid: object) -> None:
        """Ask the guest to shut down (ACPI power button); returns at once."""
        self.call(self._dom(uuid).shutdown)

    def destroy(self, uuid: object) -> None:
        """Power the domain off, if it runs."""
        dom = self._dom(uuid)
        if self.call(dom.isActive):
            self.call(dom.destroy)

    def undefine(self, uuid: object) -> None:
        flags = (
            libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        )
        self.call(self._dom(uuid).undefineFlags, flags)

    def undefine_stale(self, uuid: object) -> None:
        """Remove a definition the VM does not run from. Its disks stay:
        another host's copy of the VM may be using them."""
        dom = self._dom(uuid)
        if self.call(dom.isActive):
            raise HostError(
                "The VM runs on this host now: this definition is not stale. Nothing was removed.", permanent=True
            )
        # No flags: libvirt then refuses a definition that has a managed save
        # image, snapshots or NVRAM, rather than removing them with it.
        self.call(dom.undefineFlags, 0)
