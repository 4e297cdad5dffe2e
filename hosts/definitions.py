"""Removing a stale definition: the shut-off copy of a VM's definition left on
a host it no longer runs from (a hand migration without --undefinesource).

Only the definition goes; never a disk. Refused for the host the VM is on,
while the definition is active, while the VM is being migrated, while it runs
on several hosts at once, and when it is the VM's only saved definition.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from . import signals
from .libvirt import HostError, open_host
from .models import Domain, Host
from .sync import announce, lock_domains, resolve

# Migration statuses that hold the VM (migrations_app.models.ACTIVE; hosts
# does not import that app).
MIGRATING = ("queued", "checking", "running")


class DefinitionRefused(Exception):
    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def refusal(domain: Domain, host: Host) -> str | None:
    """Why the definition of ``domain`` on ``host`` may not be removed, or None."""
    definition = next((d for d in domain.definitions.all() if d.host_id == host.pk), None)
    if definition is None:
        return f"{domain.name} is not defined on {host.name}."
    if domain.split_brain:
        return f"{domain.name} runs on several hosts at once: stop the copy that should not run first."
    if definition.host_id == domain.host_id:
        return (
            f"{host.name} is where {domain.name} is {domain.get_state_display().lower()}: "
            "that definition is the VM itself, not a stale copy."
        )
    if definition.is_active:
        return f"{domain.name} is {definition.get_state_display().lower()} on {host.name}: it is not stale."
    others = [d for d in domain.definitions.all() if d.host_id != host.pk]
    if definition.persistent and not any(d.persistent for d in others):
        return (
            f"This is {domain.name}'s only saved definition: it runs transient on {domain.host.name}, and would be "
            f"lost when it stops. Make it persistent there first (virsh dumpxml {domain.name} > {domain.name}.xml; "
            f"virsh define {domain.name}.xml on {domain.host.name})."
        )
    if domain.migrations.filter(status__in=MIGRATING).exists():
        return f"{domain.name} is being migrated: wait for the migration to finish."
    return None


def remove_definition(user: Any, domain: Domain, host: Host) -> Domain:
    """Undefine ``domain`` on ``host`` (which must be stale), then store that."""
    domain = Domain.objects.with_definitions().get(pk=domain.pk)
    reason = refusal(domain, host)
    if reason:
        raise DefinitionRefused(reason)
    try:
        with open_host(host.connect_uri()) as conn:
            conn.undefine_stale(str(domain.uuid))
    except HostError as e:
        raise DefinitionRefused(f"{host.name} did not remove it: {e.plain}", status=502) from None
    with transaction.atomic():
        locked = lock_domains(Domain.objects.filter(pk=domain.pk).values("pk"))
        domain.definitions.filter(host=host).delete()
        changed = resolve(locked)
        announce([host.name], changed)
        signals.definition_removed.send(Domain, domain=domain, host=host, user=user)
    return domain
