"""Migration on the lab: kvmweb against plain libvirt, pre-flight checks, cold copy.

    python -m bench.bench_migration [--rounds 5] [--checks 5] [--keep-lab]

Needs root on Linux and the lab's tools (`make demo` or `make test` installs
them); elsewhere it says why and skips. It starts a lab named `bench`, which
it takes down at the end.

kvmweb runs as it does in production: daphne and an RQ worker started from
the Procfile's lines (bench/stack.py), a private redis-server, a SQLite file.

1. Live migration, shared storage, of one 256 MiB guest, back and forth
   between kvm01 and kvm02: by kvmweb, as a user waits (POST /api/migrations/
   with a token, then the migration's WebSocket until it says `succeeded`) and
   by a direct libvirt-python migrateToURI3 with the flags and parameters
   kvmweb used, alternately, ROUNDS times each. Reports the median of each and
   the ratio (goal <= 1.05), then where kvmweb's time goes, step by step, from
   the record's own timestamps, the RQ job's and libvirt's job statistics.
   Which one goes first alternates every round, so each goes both ways equally
   often.
2. Pre-flight checks (services.dry_run, in this process) for that domain and
   the two hosts: the median of CHECKS runs (goal <= 1 s).
3. Cold migration with disk copy of a shut-off guest whose disk is a sparse
   2 GiB qcow2 holding 200 MiB of random data, from kvm01's local pool to
   kvm02's: seconds and bytes sent (goal: close to 200 MiB, not 2 GiB).
"""

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime

from bench.stack import Stack

LAB_NAME = "bench"
LIVE_GUEST = "bench-live"
COLD_GUEST = "bench-cold"
MIB = 1024 * 1024


# Steps of kvmweb's live migration, in order, as (name, what it covers).
STEPS = [
    ("request", "POST /api/migrations/ until the row exists"),
    ("queue_pickup_fork", "enqueue after commit, the worker's pickup and fork, to the job's start"),
    ("connect_checks", "claim, libvirt connections, pre-flight checks, to `running`"),
    ("to_transfer", "`running` to the transfer's start (flags, note)"),
    ("transfer", "libvirt's own job time (completed job statistics)"),
    ("settle", "libvirt done to `succeeded` recorded (sampling, settle, final stats)"),
    ("notify", "`succeeded` recorded to the WebSocket message"),
]


class Bench:
    def __init__(self, lab, stack):
        from django.contrib.auth.models import User
        from knox.models import AuthToken

        from bench.stack import session_cookie
        from hosts.models import Host
        from hosts.sync import sync_host

        self.lab = lab
        self.stack = stack
        self.port = stack.start_web()
        stack.start_worker()
        self.user = User.objects.create_superuser("bench", "", "x")
        self.token = AuthToken.objects.create(user=self.user, expiry=None)[1]
        self.session = session_cookie(self.user)
        self.hosts = {}
        for name in lab.hosts:
            host = Host.objects.create(name=name, uri=lab.uri(name))
            result = sync_host(host)
            if not result.online:
                raise SystemExit(f"{name} is not reachable: {result.error}")
            self.hosts[name] = host

    def sync(self):
        from hosts.sync import sync_host

        for host in self.hosts.values():
            host.refresh_from_db()
            sync_host(host)

    def domain(self, name):
        from hosts.models import Domain

        return Domain.objects.select_related("host").get(name=name)

    def other(self, host_name):
        return next(h for n, h in self.hosts.items() if n != host_name)

    def request(self, name, **kwargs):
        from migrations_app.request import MigrationRequest

        domain = self.domain(name)
        return MigrationRequest(domain=domain, target=self.other(domain.host.name), **kwargs)

    # -- 1. live: kvmweb against libvirt ------------------------------------

    def through_kvmweb(self, name, **fields):
        """Ask for a migration through the API and watch it on its WebSocket, as a user does.

        Returns the migration (with ``timeline``: seconds from the request to
        each step) once its job has ended, inventory refresh included.
        """
        import json
        import urllib.request

        import websocket
        from django_rq import get_queue
        from rq.job import Job

        from migrations_app.models import FINISHED, Migration

        domain = self.domain(name)
        body = {"domain": domain.pk, "target_host": self.other(domain.host.name).pk, "mode": "live", **fields}
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/migrations/",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
        )
        t0 = time.time()
        with urllib.request.urlopen(request) as response:
            pk = json.load(response)["id"]
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{self.port}/ws/migrations/{pk}/",
            cookie=f"sessionid={self.session}",
            origin=f"http://127.0.0.1:{self.port}",
            timeout=600,
        )
        try:
            while json.loads(ws.recv())["migration"]["status"] not in FINISHED:
                pass
            seen = time.time()
        finally:
            ws.close()
        connection = get_queue("migrations").connection
        deadline = time.monotonic() + 120
        while (job := Job.fetch(f"migration-{pk}", connection=connection)).ended_at is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"the job of migration {pk} did not end")
            time.sleep(0.02)
        migration = Migration.objects.get(pk=pk)
        if migration.status != "succeeded":
            raise SystemExit(
                f"kvmweb's migration {pk} ended {migration.status}: {migration.error} {migration.error_detail}"
            )
        migration.seconds = seen - t0
        migration.after_success = job.ended_at.timestamp() - migration.finished_at.timestamp()
        if migration.mode == "live":
            migration.timeline = self.timeline(migration, job, t0, seen)
        return migration

    @staticmethod
    def timeline(migration, job, t0, seen):
        """Seconds each step of STEPS took, from the request at ``t0`` to the message ``seen``."""
        transfer_at = next(
            datetime.fromisoformat(e["at"]).timestamp()
            for e in migration.events
            if e["message"].startswith("Starting the transfer")
        )
        libvirt_done = transfer_at + migration.stats["time_ms"] / 1000
        stamps = [
            ("request", migration.created_at.timestamp()),
            ("queue_pickup_fork", job.started_at.timestamp()),
            ("connect_checks", migration.started_at.timestamp()),
            ("to_transfer", transfer_at),
            ("transfer", libvirt_done),
            ("settle", migration.finished_at.timestamp()),
            ("notify", seen),
        ]
        timeline, previous = {}, t0
        for step, at in stamps:
            timeline[step] = at - previous
            previous = at
        return timeline

    @staticmethod
    def set_downtime(dom, downtime_ms):
        import libvirt

        with contextlib.suppress(libvirt.libvirtError):  # the migration may have ended already
            dom.migrateSetMaxDowntime(downtime_ms, 0)

    def direct_live(self, name, flag_names):
        """The same move with libvirt-python alone, mirroring the engine's call."""
        import libvirt

        from hosts.libvirt import migration_flags
        from migrations_app.engine.live import SAMPLE_INTERVAL
        from migrations_app.policies import get_policy

        domain = self.domain(name)
        target = self.other(domain.host.name)
        address = target.address()
        params = {libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{address}"}
        if "auto_converge" in flag_names:
            params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL] = 20
            params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT] = 10
        flags = migration_flags(flag_names)
        t0 = time.perf_counter()
        conn = libvirt.open(domain.host.uri)
        try:
            dom = conn.lookupByUUIDString(str(domain.uuid))
            # kvmweb's governor sets the policy's allowed downtime at its first
            # sample, half a second in; so does this call, or the two would
            # not move the same way.
            downtime = threading.Timer(
                SAMPLE_INTERVAL, self.set_downtime, (dom, get_policy("default").downtime_at(SAMPLE_INTERVAL))
            )
            downtime.start()
            dom.migrateToURI3(target.uri, params, flags)
            downtime.cancel()
        finally:
            conn.close()
        elapsed = time.perf_counter() - t0
        # Outside the timing: libvirt's own clock of the job, as kvmweb reads it.
        conn = libvirt.open(target.uri)
        try:
            job_ms = conn.lookupByUUIDString(str(domain.uuid)).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        finally:
            conn.close()
        self.sync()  # kvmweb must know where the guest is now
        return elapsed, job_ms.get("time_elapsed", 0) / 1000

    def live(self, rounds):
        from bench import median, report

        self.lab.make_guest("kvm01", LIVE_GUEST, memory_mib=256, disk="shared")
        self.sync()
        # One kvmweb run first, untimed: it tells which flags kvmweb uses, and
        # warms both hosts (first incoming QEMU on each) for both methods.
        first = self.through_kvmweb(LIVE_GUEST)
        flag_names = list(first.flags)
        self.direct_live(LIVE_GUEST, flag_names)
        ours, ours_job, theirs, theirs_job, downtimes, after = [], [], [], [], [], []
        steps = {step: [] for step, _ in STEPS}
        for i in range(rounds):
            order = ("kvmweb", "direct") if i % 2 == 0 else ("direct", "kvmweb")
            for method in order:
                if method == "kvmweb":
                    migration = self.through_kvmweb(LIVE_GUEST)
                    ours.append(migration.seconds)
                    ours_job.append(migration.stats["time_ms"] / 1000)
                    after.append(migration.after_success)
                    for step, seconds in migration.timeline.items():
                        steps[step].append(seconds)
                    if migration.stats.get("downtime_ms") is not None:
                        downtimes.append(migration.stats["downtime_ms"])
                else:
                    seconds, job_seconds = self.direct_live(LIVE_GUEST, flag_names)
                    theirs.append(seconds)
                    theirs_job.append(job_seconds)
        tick = self.lab.wait_ticking(LIVE_GUEST, timeout=30)
        report("live.flags", ",".join(flag_names), "as kvmweb recorded them; the direct call used the same")
        report(
            "live.kvmweb_seconds_median",
            median(ours),
            "POST to `succeeded` on the WebSocket, through daphne and the worker: "
            + ", ".join(f"{s:.2f}" for s in ours),
        )
        report(
            "live.libvirt_seconds_median",
            median(theirs),
            "direct migrateToURI3: " + ", ".join(f"{s:.2f}" for s in theirs),
        )
        report("live.kvmweb_vs_libvirt_ratio", median(ours) / median(theirs), "goal <= 1.05")
        # How long libvirt's job itself takes varies with the machine's load
        # more than anything kvmweb does; what is outside it does not.
        ours_outside = median([t - j for t, j in zip(ours, ours_job, strict=True)])
        theirs_outside = median([t - j for t, j in zip(theirs, theirs_job, strict=True)])
        report(
            "live.libvirt_outside_job_ms",
            theirs_outside * 1000,
            "of the direct call, not on libvirt's job clock: connection, preparing the target, finishing",
        )
        report("live.kvmweb_outside_job_ms", ours_outside * 1000, "the same for kvmweb, request to WebSocket")
        report(
            "live.kvmweb_overhead_ms",
            (ours_outside - theirs_outside) * 1000,
            "the difference: what kvmweb adds, whatever libvirt's job took",
        )
        for step, what in STEPS:
            report(f"live.step.{step}_ms", median(steps[step]) * 1000, what)
        report(
            "live.after_success_ms",
            median(after) * 1000,
            "`succeeded` to the job's end (inventory refresh): not waited for by the user",
        )
        if downtimes:
            report("live.kvmweb_downtime_ms_median", float(median(downtimes)))
        report(
            "live.guest_still_ticking", f"tick {tick[0]} uptime {tick[1]:.0f} s", f"after {2 * rounds + 2} migrations"
        )

    # -- 2. pre-flight checks -----------------------------------------------

    def checks(self, count):
        from bench import median, report
        from migrations_app.services import dry_run

        times, outcome = [], None
        for _ in range(count):
            req = self.request(LIVE_GUEST)
            t0 = time.perf_counter()
            results = dry_run(self.user, req)
            times.append(time.perf_counter() - t0)
            outcome = {r.result for r in results}
        report(
            "checks.dry_run_seconds_median",
            median(times),
            f"goal <= 1; {count} runs, {len(results)} checks each, results {'/'.join(sorted(outcome))}",
        )

    # -- 3. cold copy -------------------------------------------------------

    def cold(self):
        from bench import report

        # A shut-off guest with an empty 2 GiB qcow2 on kvm01's local pool...
        self.lab.make_guest("kvm01", COLD_GUEST, memory_mib=128, disk="local", disk_mib=2048, start=False)
        inside = f"/var/lib/libvirt/images/{COLD_GUEST}.qcow2"
        outside = os.path.join(self.lab.host_dir("kvm01"), "lib", "images", f"{COLD_GUEST}.qcow2")
        if not os.path.exists(outside):
            raise SystemExit(f"expected {inside} of kvm01 at {outside}")
        # ...replaced by one that holds 200 MiB of random data at its start.
        with tempfile.TemporaryDirectory(dir=os.path.dirname(outside)) as tmp:
            raw = os.path.join(tmp, "data.raw")
            with open(raw, "wb") as f:
                for _ in range(200):
                    f.write(os.urandom(MIB))
                f.truncate(2048 * MIB)
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, outside + ".new"], check=True)
            os.replace(outside + ".new", outside)
        with self.lab.connection("kvm01") as conn:
            conn.storagePoolLookupByName("local").refresh(0)
        self.sync()
        allocated = os.stat(outside).st_blocks * 512

        migration = self.through_kvmweb(COLD_GUEST, mode="cold", storage="copy", target_pool="local")
        elapsed = migration.seconds
        sent = migration.stats.get("data_transferred") or 0
        copied = os.path.join(self.lab.host_dir("kvm02"), "lib", "images", f"{COLD_GUEST}.qcow2")
        same = subprocess.run(
            ["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "qcow2", copied, outside], capture_output=True
        ).returncode
        report(
            "cold.seconds",
            elapsed,
            "request to succeeded; shut-off guest, 2 GiB qcow2 holding 200 MiB, local pool to local pool",
        )
        report(
            "cold.bytes_sent",
            sent,
            f"{sent / MIB:.0f} MiB; data 200 MiB, image file {allocated / MIB:.0f} MiB on disk, virtual size 2048 MiB",
        )
        report("cold.bytes_sent_vs_data", sent / (200 * MIB), "goal: close to 1, not 10")
        report(
            "cold.copy_identical",
            "yes" if same == 0 else f"no (qemu-img compare exit {same})",
            "qemu-img compare of the target copy with the source image",
        )


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.bench_migration", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--checks", type=int, default=5)
    parser.add_argument("--keep-lab", action="store_true", help="leave the bench lab up")
    args = parser.parse_args(argv)

    from bench import report, skip
    from tests.lab.conftest_plugin import lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason:
        skip("bench_migration", reason)

    from tests.lab import Lab

    lab = Lab(name=LAB_NAME)
    stack = Stack()
    try:
        stack.setup_django()
        t0 = time.perf_counter()
        was_up = lab.is_up()
        lab.up()
        report(
            "lab.up_seconds",
            time.perf_counter() - t0,
            "already up" if was_up else f"{len(lab.hosts)} hosts from nothing",
        )
        for guest in (LIVE_GUEST, COLD_GUEST):
            lab.remove_guest(guest)
        bench = Bench(lab, stack)
        bench.live(args.rounds)
        bench.checks(args.checks)
        bench.cold()
    finally:
        for guest in (LIVE_GUEST, COLD_GUEST):
            try:
                lab.remove_guest(guest)
            except Exception as e:  # noqa: BLE001 - the lab goes down next anyway
                print(f"# could not remove {guest}: {e}", file=sys.stderr)
        if not args.keep_lab:
            lab.down()
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
