"""A post-copy migration whose link broke: wait for the target, then resume it.

Once post-copy has started the guest runs on the target and fetches the
memory not yet sent from the source, so neither side holds the whole VM. When
the link between the hosts breaks, libvirt (after its keepalive, ~30 s) ends
the migrate call with an error and leaves the source paused ("post-copy
failed") and the target running but stalled on every page it lacks. Nothing
is lost as long as nobody destroys either side: QEMU 7.2 and libvirt 9.0 can
resume the same migration over a new connection (VIR_MIGRATE_POSTCOPY_RESUME).

What was seen on the lab (libvirt 9.0, QEMU 7.2; a veth unplugged in the
middle of post-copy for ~35 s, then plugged back):

- libvirt on the source gave up on the link after its keepalive (~30 s):
  the migrate call failed ("client socket is closed"), the source paused
  with reason "post-copy failed", the target kept reporting "running,
  post-copy" until it heard of the break.
- Once, with the source's QEMU still in post-copy when the link came back,
  virDomainAbortJobFlags(VIR_DOMAIN_ABORT_JOB_POSTCOPY) dropped the stream,
  the target reported "post-copy failed" at once, the first resume was
  refused ("being actively monitored by another thread") and one a little
  later completed the migration, the guest's counter carrying on on the target.
- In the runs of tests/test_postcopy_recovery.py the source's QEMU noticed
  the broken socket by itself when the link came back, and so did the
  target's QEMU ("Detected IO failure for postcopy. Migration paused."), but
  libvirtd on the target did not: its Finish phase of the first migration
  kept the VM's incoming job for good ("cannot acquire state change lock
  (held by monitor=remoteDispatchDomainMigrateFinish3Params)"), so every
  resume timed out in its Prepare phase. Restarting that libvirtd lost the
  incoming migration altogether ("domain is not processing incoming
  migration"). A resume started before the target had heard of the break
  never returned and held the VM's job on the source until its libvirtd
  restarted: hence the wait below for the target to report the failure.

So: say plainly where each side stands, wait for the target to answer, drop
the old stream, resume, and try again until it works or the wait
(KVMWEB_POSTCOPY_RECOVERY_SECONDS) runs out; then tell the operator exactly
what state each side is in and what to do, and touch neither.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from django.conf import settings

from core.records import InvalidTransition
from hosts.libvirt import POSTCOPY_ACTIVE, POSTCOPY_FAILED, Connection, DomainState, HostError, reachable

from ..models import AuditAction, Migration, Phase

if TYPE_CHECKING:
    from .live import LiveMigration

# Seconds between looks at the target while it does not answer.
RETRY_SECONDS = 2.0
# After dropping QEMU's old stream, libvirt needs a moment before it takes a resume.
SETTLE_SECONDS = 3.0

CODE = "postcopy_interrupted"


def is_interrupted(src: Connection, uuid: str) -> bool:
    """Whether the source holds a post-copy migration that lost its link."""
    try:
        return src.postcopy_state(uuid) == POSTCOPY_FAILED
    except HostError:
        return False


def sides(migration: Migration, src: Connection, dst: Connection | None) -> str:
    """Where each side of an interrupted post-copy migration stands, in words."""
    name, uuid = migration.domain_name, str(migration.domain_uuid)
    try:
        on_source = src.postcopy_state(uuid)
        source = (
            f"paused on {migration.source_name}, which holds the memory not yet sent"
            if on_source == POSTCOPY_FAILED
            else f"{src.state(uuid) or 'not defined'} on {migration.source_name}"
        )
    except HostError:
        source = f"unknown on {migration.source_name}, which does not answer"
    if dst is None:
        target = f"{migration.target_name} does not answer (the VM there waits for that memory)"
    else:
        try:
            on_target = dst.postcopy_state(uuid)
            if on_target == POSTCOPY_FAILED:
                target = (
                    f"stalled on {migration.target_name}, waiting for that memory (libvirt: running, post-copy failed)"
                )
            elif on_target == POSTCOPY_ACTIVE:
                target = (
                    f"stalled on {migration.target_name}, where libvirt still reports post-copy running (it has not "
                    "noticed the break yet)"
                )
            else:
                target = f"{dst.state(uuid) or 'not defined'} on {migration.target_name}"
        except HostError:
            target = f"{migration.target_name} does not answer (the VM there waits for that memory)"
    return f"{name} is {source}; {target}"


def target_lost(dst: Connection, uuid: str) -> str | None:
    """The target's copy is gone (its QEMU ended): its state in words; None while it is there."""
    try:
        state = dst.state(uuid)
    except HostError:
        return None  # does not answer: not known to be gone
    if state is None:
        return "not defined"
    if state in (DomainState.SHUTOFF, DomainState.CRASHED):
        return str(state).replace("shutoff", "shut off")
    return None


def lost_message(migration: Migration, state: str) -> str:
    name, source, target = migration.domain_name, migration.source_name, migration.target_name
    return (
        f"Post-copy was interrupted and the copy of {name} on {target} did not survive it ({state} there: QEMU "
        f"on {target} gave up on the broken stream). {name} is paused on {source}, with its memory as it was when "
        f"post-copy started; kvmweb cannot resume the migration and leaves it so. If the link broke during the "
        f"switch-over, before the guest ran on {target}, the copy on {source} is complete: `virsh resume {name}` "
        f"on {source}. If the guest had run on {target}, what it wrote to memory since is lost and its disks are "
        f"newer than the paused copy: restore it from a backup, or resume the paused copy knowing that."
    )


def manual_resume(migration: Migration) -> str:
    """The command that resumes the migration by hand, on the source host."""
    target = migration.target.uri if migration.target is not None else "TARGET-URI"
    return (
        f"virsh migrate --live --p2p --persistent --undefinesource --postcopy --postcopy-resume "
        f"{migration.domain_name} {target}"
    )


def recover(live: LiveMigration, flags: list[str], migrate_uri: str | None) -> HostError | None:
    """Resume an interrupted post-copy migration once the target answers.

    Returns None when the resumed migration finished (``live.dst`` is then a
    fresh connection to the target, for settle), else a HostError with code
    CODE that says where each side is and what to do: the caller must then
    leave both sides alone."""
    m = live.m
    uuid = str(m.domain_uuid)
    target = m.target
    deadline = time.monotonic() + settings.KVMWEB_POSTCOPY_RECOVERY_SECONDS
    told = ""
    attempts = 0
    last_error: HostError | None = None
    dst: Connection | None = None
    paused_once = False
    while True:
        m.heartbeat()
        answers = target is not None and reachable(target.uri, timeout=2.0)
        if not answers:
            paused_once = False  # gone again: drop the stream again when it is back
        # One new connection once the target answers again, kept while it does.
        dst = (dst or live.reopen_target()) if answers else None
        where = sides(m, live.src, dst)
        if where != told:
            told = where
            m.note(
                f"Post-copy interrupted: {where}. Nothing is lost while both sides are left alone; kvmweb "
                + (
                    f"resumes the migration now that {m.target_name} answers."
                    if dst is not None
                    else f"resumes the migration when {m.target_name} answers again."
                ),
                AuditAction.POLICY,
                decision="postcopy_interrupted",
            )
            with contextlib.suppress(InvalidTransition):
                m.set_phase(Phase.POSTCOPY_INTERRUPTED)
        lost = target_lost(dst, uuid) if dst is not None else None
        if lost is not None and is_interrupted(live.src, uuid):
            return HostError(lost_message(m, lost), last_error.detail if last_error else "", code=CODE)
        if dst is not None and is_interrupted(live.src, uuid) and not is_interrupted(dst, uuid):
            # The target still believes in the old stream (its end of the TCP
            # connection has not heard of the break yet): a resume started now
            # hung libvirt's call on the lab, holding the VM's job on the
            # source until libvirtd restarted. Drop the source's end once (QEMU
            # refuses if it dropped it already), which tells the target, and
            # wait for the target to report "post-copy failed" too.
            if not paused_once:
                paused_once = True
                with contextlib.suppress(HostError):
                    live.src.pause_postcopy(uuid)
        elif dst is not None and is_interrupted(live.src, uuid):
            attempts += 1
            if attempts == 1:
                m.record_flags([*flags, "postcopy_resume"])
            time.sleep(SETTLE_SECONDS)
            error = live.transfer([*flags, "postcopy_resume"], migrate_uri, [], None, resumed=True)
            if error is None:
                m.note(
                    f"Post-copy resumed over a new connection (attempt {attempts}) and finished.",
                    AuditAction.POLICY,
                    decision="postcopy_resumed",
                )
                return None
            last_error = error
            if not is_interrupted(live.src, uuid):
                # It ended some other way (done after all, or gone): settle finds out where the VM is.
                return error
            with contextlib.suppress(InvalidTransition):
                m.set_phase(Phase.POSTCOPY_INTERRUPTED)
            if attempts in (1, 5) or attempts % 20 == 0:
                m.note(f"Resuming post-copy failed (attempt {attempts}): {error.plain} Trying again.")
        elif dst is not None and not is_interrupted(live.src, uuid):
            return last_error  # no longer interrupted: settle says how it ended
        if time.monotonic() >= deadline:
            break
        time.sleep(RETRY_SECONDS)
    dst = live.reopen_target() if target is not None and reachable(target.uri, timeout=2.0) else None
    return HostError(
        f"Post-copy was interrupted and could not be resumed within "
        f"{settings.KVMWEB_POSTCOPY_RECOVERY_SECONDS} s: {sides(m, live.src, dst)}. Neither copy is complete: "
        f"do not start, destroy or undefine {m.domain_name} on either host. Restore the link between "
        f"{m.source_name} and {m.target_name}, then resume it on {m.source_name} with "
        f"`{manual_resume(m)}` (or `virsh domjobabort --postcopy {m.domain_name}` first if libvirt says the "
        "migration is still running)." + (f" The last resume was refused: {last_error.plain}" if last_error else ""),
        last_error.detail if last_error else "",
        code=CODE,
    )
