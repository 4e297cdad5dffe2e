"""What inventory sync finds, told to the audit log.

``hosts`` sends the signals (it never imports this app); here a VM that
turned up on another host without a kvmweb migration, and a VM running on
two hosts at once, become audit records, as do what operators do to hosts
(registering one, confirming its key, removing a definition or a volume).
(The dashboard and the VM pages hear of every change of the inventory in
dashboard/publishing.py.)
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.dispatch import receiver
from django.utils import timezone

from core.roles import AnyUser
from hosts.models import Domain, Host
from hosts.signals import (
    definition_removed,
    domain_moved,
    domain_page,
    host_key_confirmed,
    host_registered,
    split_brain_changed,
    volume_removed,
)

from .measure import known
from .models import ACTIVE, AuditAction, AuditEntry, Migration

if TYPE_CHECKING:
    from hosts.volumes import Leftover

# A migration that finished this long before a move was seen may still be
# the cause of it (the refresh after it, or an event, came late).
RECENT = timedelta(minutes=10)


def _record(
    message: str,
    domain: Domain,
    seen_at: datetime,
    source: str = "",
    target: str = "",
    action: str = AuditAction.INVENTORY,
    user: AnyUser | None = None,
    **data: Any,
) -> None:
    AuditEntry.record(
        action,
        message,
        user=user,
        domain=domain.name,
        source=source,
        target=target,
        at=seen_at,
        uuid=str(domain.uuid),
        seen_at=seen_at.isoformat(),
        **data,
    )


def by_kvmweb(domain: Domain, target: Host, seen_at: datetime) -> bool:
    """Whether a kvmweb migration moved (or is moving) this VM to ``target``."""
    mine = Migration.objects.filter(domain_uuid=domain.uuid, target=target)
    return mine.filter(status__in=ACTIVE).exists() or mine.filter(finished_at__gte=seen_at - RECENT).exists()


@receiver(domain_moved, dispatch_uid="audit-outside-moves")
def record_outside_move(
    sender: type[Domain], domain: Domain, source: Host | None, target: Host, seen_at: datetime, **kwargs: Any
) -> None:
    if by_kvmweb(domain, target, seen_at):
        return
    where = f"from {source.name} " if source is not None else ""
    _record(
        f"{domain.name} moved {where}to {target.name} outside kvmweb (seen {seen_at:%Y-%m-%d %H:%M:%S} UTC).",
        domain,
        seen_at,
        source=source.name if source is not None else "",
        target=target.name,
    )


@receiver(split_brain_changed, dispatch_uid="audit-split-brain")
def record_split_brain(
    sender: type[Domain], domain: Domain, hosts: list[str], seen_at: datetime, **kwargs: Any
) -> None:
    if domain.split_brain:
        message = (
            f"{domain.name} runs on {' and '.join(hosts)} at once (split brain): two copies may be writing "
            "the same disks. Stop the copy that should not run; kvmweb refuses to migrate it until then."
        )
    else:
        message = f"{domain.name} no longer runs on several hosts at once: the split brain is over."
    _record(message, domain, seen_at, hosts=hosts, split_brain=domain.split_brain)


@receiver(definition_removed, dispatch_uid="audit-definition-removed")
def record_definition_removed(sender: object, domain: Domain, host: Host, user: AnyUser, **kwargs: Any) -> None:
    _record(
        f"{user.get_username()} removed the stale definition of {domain.name} from {host.name} "
        f"(it is on {domain.host.name}); its disks were kept.",
        domain,
        timezone.now(),
        source=host.name,
        action=AuditAction.HOST,
        user=user,
    )


@receiver(volume_removed, dispatch_uid="audit-volume-removed")
def record_volume_removed(sender: object, host: Host, leftover: Leftover, user: AnyUser, **kwargs: Any) -> None:
    whose = f" (a copy of {leftover.vm}'s disk, which is on {leftover.vm_host})" if leftover.vm else ""
    AuditEntry.record(
        AuditAction.VOLUME,
        f"{user.get_username()} removed the leftover volume {leftover.name} from pool {leftover.pool} on "
        f"{host.name}{whose}; it was {leftover.reason}.",
        user=user,
        host=host.name,
        vm=leftover.vm,
        pool=leftover.pool,
        volume=leftover.name,
        path=leftover.path,
        migration_id=leftover.migration,
    )


@receiver(host_registered, dispatch_uid="audit-host-registered")
def record_host_registered(sender: object, host: Host, user: AnyUser | None, **kwargs: Any) -> None:
    AuditEntry.record(
        AuditAction.REGISTER,
        f"Registered host {host.name} at {host.uri}"
        + (f", its SSH host key pinned: {host.ssh_fingerprint}" if host.ssh_fingerprint else ""),
        user=user,
        host=host.name,
        uri=host.uri,
    )


@receiver(host_key_confirmed, dispatch_uid="audit-host-key-confirmed")
def record_host_key_confirmed(sender: object, host: Host, user: AnyUser | None, **kwargs: Any) -> None:
    AuditEntry.record(
        AuditAction.HOST_KEY,
        f"Confirmed the SSH host key of {host.name}: {host.ssh_fingerprint}",
        user=user,
        host=host.name,
        fingerprint=host.ssh_fingerprint,
    )


@receiver(domain_page, dispatch_uid="domain-page-dirty-rate")
def dirty_rate_on_domain_page(sender: type[Domain], domain: Domain, **kwargs: Any) -> dict[str, Any]:
    """A VM's page shows what is known of its dirty rate, with sources and ages (measure.known)."""
    return {"dirty": known(domain.uuid)}
