"""Where the VM may go: one copy of it only, a target not in maintenance,
the placement rules kept."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.dispatch import Signal

from hosts.models import Domain, Host

from .base import FAIL, CheckInput, Checks

if TYPE_CHECKING:
    from hosts.libvirt import Connection, DomainDetails


def check_single_copy(checks: Checks, v: CheckInput) -> bool:
    """A VM running on two hosts at once (split brain) is not moved: which
    copy is the real one is for an administrator to decide."""
    domain = Domain.objects.filter(uuid=v.uuid, split_brain=True).first()
    if domain is None:
        return True
    checks.add("single_copy", FAIL, split_brain_message(domain))
    return False


def split_brain_message(domain: Domain) -> str:
    return (
        f"{domain.name} runs on {' and '.join(domain.running_on)} at once (split brain). Stop the copy that "
        "should not run, refresh the inventory, then migrate it."
    )


def check_maintenance(
    checks: Checks, v: CheckInput, dom: DomainDetails, source: Connection, target: Connection
) -> None:
    # Asked again here, in the worker: maintenance may have begun after the
    # migration was queued.
    host = Host.objects.filter(pk=v.target.pk).only("maintenance").first()
    if host is not None and host.maintenance:
        checks.add(
            "maintenance",
            FAIL,
            f"{v.target.name} went into maintenance after this migration was requested: no VM may "
            "move onto it now. Choose another target host.",
        )


# The check of the placement rules, which maintenance (an app above this one)
# keeps: sent with ``checks`` (call its ``add``) and ``values`` (the
# CheckInput), in the order the checks run; maintenance.rules.check_move.
placement_check = Signal()


def check_placement_rules(
    checks: Checks, v: CheckInput, dom: DomainDetails, source: Connection, target: Connection
) -> None:
    """The placement rules live in maintenance, which builds on this app: its
    receiver of ``placement_check`` adds the check (maintenance.rules.check_move)."""
    placement_check.send(sender=Checks, checks=checks, values=v)
