"""Where the VM may go: one copy of it only, a target not in maintenance,
the placement rules kept."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hosts.models import Domain, Host

from .base import FAIL, PASS, WARN, CheckInput, Checks

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


def check_placement_rules(
    checks: Checks, v: CheckInput, dom: DomainDetails, source: Connection, target: Connection
) -> None:
    """A move that breaks a placement rule (maintenance.models.PlacementRule) fails, naming the rule.
    Only VMs that a rule names get this check."""
    # Here, not at the top: maintenance builds on this app, not the other way round.
    from maintenance import planner
    from maintenance import rules as placement

    uuid = str(v.uuid)
    mine = [r for r in placement.enabled() if uuid in r.vms]
    if not mine:
        return
    where = placement.where(mine)
    hosts = {h.pk: planner.HostFacts(id=h.pk, name=h.name) for h in Host.objects.only("name")}
    target_facts = hosts.get(v.target.pk) or planner.HostFacts(id=v.target.pk, name=v.target.name)
    why = planner.rule_refusal(mine, uuid, v.name, target_facts, where, hosts)
    names = ", ".join(sorted(r.name for r in mine))
    reason = v.rule_override.strip()
    if why and reason:
        checks.add(
            "placement_rules",
            WARN,
            f"Moving {v.name} to {v.target.name} breaks a placement rule: {why}. The operator overrides it: {reason}",
        )
    elif why:
        checks.add(
            "placement_rules",
            FAIL,
            f"Moving {v.name} to {v.target.name} breaks a placement rule: {why}. Choose a host the rule "
            "allows, or change the rule first.",
        )
    else:
        checks.add("placement_rules", PASS, f"{v.target.name} keeps {v.name}'s placement rules ({names}).")
