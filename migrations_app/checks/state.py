"""The VM itself: a state it can move in, and no VM of its name or UUID on the target."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..models import Mode
from .base import FAIL, PASS, WARN, CheckInput, Checks

if TYPE_CHECKING:
    from hosts.libvirt import Connection, DomainDetails


def check_state(checks: Checks, v: CheckInput, dom: DomainDetails, source: Connection, target: Connection) -> None:
    state = dom.info.state
    if dom.job_active:
        checks.add(
            "domain_state",
            FAIL,
            f"{v.name} already has a job running in libvirt (a migration, backup or save). Wait for it to finish.",
        )
    elif v.mode == Mode.LIVE:
        if dom.active:
            checks.add("domain_state", PASS, f"{v.name} is {state}: it can move live.")
        else:
            checks.add(
                "domain_state",
                FAIL,
                f"{v.name} is {state}, not running, so it cannot be migrated live. "
                "Use a cold migration, or start it first.",
            )
    else:
        if not dom.info.persistent:
            checks.add(
                "domain_state",
                FAIL,
                f"{v.name} is transient (it has no saved definition): a cold migration would "
                "lose it when it shuts down. Define it first, or migrate it live.",
            )
        elif dom.active:
            how = (
                f"it will be powered off if it has not shut down after {v.shutdown_timeout} s"
                if v.force_off
                else f"the migration fails, leaving it running, if it has not shut down after {v.shutdown_timeout} s"
            )
            checks.add(
                "domain_state",
                WARN,
                f"{v.name} is running: it will be shut down for the copy and started again on the target; {how}.",
            )
        else:
            checks.add("domain_state", PASS, f"{v.name} is {state}: ready for a cold migration.")


def check_clash(checks: Checks, v: CheckInput, dom: DomainDetails, source: Connection, target: Connection) -> None:
    by_uuid, by_name = target.find_domain(uuid=v.uuid, name=v.name)
    if by_uuid:
        checks.add(
            "name_clash",
            FAIL,
            f"{v.target.name} already has a VM with this one's UUID: an earlier copy was "
            "left there. Remove it (after checking it is not the one in use) and try again.",
        )
    elif by_name:
        checks.add(
            "name_clash",
            FAIL,
            f"{v.target.name} already has a different VM named {v.name}. Rename one of them first.",
        )
    else:
        checks.add("name_clash", PASS, f"No VM named {v.name} on {v.target.name}.")
