"""The Procfile's ``worker`` line: a pool of RQ worker processes, supervised.

    python manage.py runworkers [--workers N] [--short M]

One RQ worker runs one job at a time, so a single ``rqworker`` ran one
migration at a time whatever the per-host limits said, and a periodic sync
waited behind a ten-minute migration. This pool starts, in one command:

- ``KVMWEB_WORKERS`` migration slots (default 4): processes that take only the
  ``migrations`` queue, so as many migrations run at once as there are slots
  (and the hosts' limits allow: ``engine.claim`` counts those);
- ``KVMWEB_SHORT_WORKERS`` short-job slots (default 2): processes that take
  only the ``default`` queue (syncs, reconcile, evacuation steps), so short
  work never waits behind a long migration. They also run RQ's scheduler
  (slot retries, the periodic jobs); one of them holds its lock at a time.

Each slot is a process forked once, which runs its jobs itself (no fork per
job: a migration starts some 15 ms sooner, and keeps the modules, templates
and database connection the slot loaded). The parent forks and reaps: a slot
that dies (a crash, an OOM kill, a SIGKILL) is started again, at once the
first time, then with a growing pause if it keeps dying young; its children
are told to stop if the parent itself dies (Linux's parent-death signal), so
no slot outlives the pool. TERM or INT stops the pool: each slot finishes its
current job (RQ's warm shutdown; a live migration it leaves behind is
peer-to-peer, carries on in libvirt and is adopted by the next reconcile).

Why not RQ's ``WorkerPool`` (``rqworker-pool``): it gives every process the
same queues (no slots kept for short jobs), starts no scheduler of its own
choosing, restarts a crashing process every second without pause, and RQ
calls it beta. What kvmweb needs of a pool is this file.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass

import django_rq

from kvmweb.worker import PoolWorker, preload

log = logging.getLogger("kvmweb.workerpool")

MIGRATIONS = "migrations"
SHORT = "default"

# A slot that dies sooner than this after starting is "dying young": it is
# started again after a pause that doubles each time, up to MAX_PAUSE.
YOUNG_SECONDS = 10.0
FIRST_PAUSE = 1.0
MAX_PAUSE = 30.0
# How often the parent looks for dead slots (a SIGCHLD wakes it sooner).
LOOK_SECONDS = 1.0
# How long TERM waits for the slots' warm shutdown before it kills them.
STOP_SECONDS = 20.0  # within systemd's TimeoutStopSec (deploy/) and supervisord's wait

PR_SET_PDEATHSIG = 1


@dataclass
class Slot:
    role: str  # "migrations" or "short"
    index: int
    queues: tuple[str, ...]
    pid: int = 0
    started: float = 0.0
    pause: float = 0.0
    due: float = 0.0  # when a dead slot may start again

    @property
    def label(self) -> str:
        return f"{self.role}-{self.index}"


def slots(workers: int, short: int) -> list[Slot]:
    return [Slot("migrations", i + 1, (MIGRATIONS,)) for i in range(workers)] + [
        Slot("short", i + 1, (SHORT,)) for i in range(short)
    ]


class Pool:
    def __init__(self, workers: int, short: int, logging_level: str = "INFO") -> None:
        if workers < 1 or short < 1:
            raise ValueError("the pool needs at least one migration slot and one short-job slot")
        self.slots = slots(workers, short)
        self.logging_level = logging_level
        self.stopping = False

    # -- the parent ------------------------------------------------------------

    def run(self) -> int:
        _preload()
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        # A dead child wakes the parent's sleep (the handler does nothing else).
        signal.signal(signal.SIGCHLD, lambda *_: None)
        log.info(
            "worker pool %s: %d migration slot(s), %d short-job slot(s)",
            os.getpid(),
            sum(s.role == "migrations" for s in self.slots),
            sum(s.role == "short" for s in self.slots),
        )
        for slot in self.slots:
            self._spawn(slot)
        while not self.stopping:
            self._reap()
            now = time.monotonic()
            for slot in self.slots:
                if not slot.pid and now >= slot.due and not self.stopping:
                    self._spawn(slot)
            time.sleep(LOOK_SECONDS)
        return self._shutdown()

    def _stop(self, signum: int, frame: object) -> None:
        if not self.stopping:
            log.info("worker pool: %s received, each slot finishes its job", signal.Signals(signum).name)
        self.stopping = True
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, sig: int) -> None:
        for slot in self.slots:
            if slot.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, sig)

    def _shutdown(self) -> int:
        deadline = time.monotonic() + STOP_SECONDS
        while any(s.pid for s in self.slots) and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.1)
        if any(s.pid for s in self.slots):
            log.warning("worker pool: slots still busy after %.0f s; killing them", STOP_SECONDS)
            self._signal_all(signal.SIGKILL)
            while any(s.pid for s in self.slots):
                self._reap(block=True)
        log.info("worker pool: stopped")
        return 0

    def _reap(self, block: bool = False) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue  # a grandchild reparented to us (RQ's scheduler): nothing to do
            self._died(slot, status)
            if block:
                return

    def _died(self, slot: Slot, status: int) -> None:
        now = time.monotonic()
        lived = now - slot.started
        how = (
            f"exit {os.WEXITSTATUS(status)}"
            if os.WIFEXITED(status)
            else f"signal {signal.Signals(os.WTERMSIG(status)).name}"
            if os.WIFSIGNALED(status)
            else f"status {status}"
        )
        slot.pid = 0
        if self.stopping:
            log.info("worker pool: %s stopped (%s)", slot.label, how)
            return
        if lived < YOUNG_SECONDS:
            slot.pause = min(MAX_PAUSE, slot.pause * 2 if slot.pause else FIRST_PAUSE)
        else:
            slot.pause = 0.0
        slot.due = now + slot.pause
        log.warning(
            "worker pool: %s died after %.1f s (%s); starting it again%s",
            slot.label,
            lived,
            how,
            f" in {slot.pause:.0f} s" if slot.pause else "",
        )

    def _spawn(self, slot: Slot) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid:
            slot.pid, slot.started = pid, time.monotonic()
            return
        code = 1
        try:
            code = self._child(slot, parent)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            log.exception("worker pool: %s crashed", slot.label)
        finally:
            logging.shutdown()
            os._exit(code)

    # -- a slot ------------------------------------------------------------------

    def _child(self, slot: Slot, parent: int) -> int:
        _die_with_parent(parent)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)

        queues = [django_rq.get_queue(name) for name in slot.queues]
        name = f"{socket.gethostname()}.{os.getpid()}.{slot.label}"
        worker = PoolWorker(queues, name=name, connection=queues[0].connection)
        worker.starts_periodic_jobs = slot.role == "short"
        worker.work(with_scheduler=slot.role == "short", logging_level=self.logging_level)
        return 0


def _preload() -> None:
    """What every slot would load for itself, loaded once before forking."""
    try:
        preload()
    except Exception:
        log.exception("could not preload the engine; each slot loads it itself")


def _die_with_parent(parent: int) -> None:
    """Ask Linux to send this process TERM when the pool's parent dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(0)
