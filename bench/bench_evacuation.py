"""Evacuation: planning at scale, and moving a host's guests away on the lab.

    python -m bench.bench_evacuation [--rounds 2] [--keep-lab] [--no-lab]

1. Planning 2,000 VMs over 100 hosts: the planner alone over facts built in
   memory, and the whole dry run (`POST /api/hosts/{id}/maintenance/
   {"dry_run": true}` without HTTP: the inventory and the capacity model read
   from the database, then the plan) with the 2,000 VMs on one host and 99
   others to take them. Medians of 5 runs; goal <= 1 s.
2. On the lab (root on Linux; skipped elsewhere): four 256 MiB guests with
   shared disks on kvm01, evacuated by kvmweb (request to `succeeded`, run by
   an RQ worker started as the Procfile starts it) to kvm02 and kvm03, against
   the same four moved one by one with `virsh migrate --live --p2p
   --persistent --undefinesource` to the same targets, alternately, ROUNDS
   times each. Goal ratio <= 0.7 (two moves at once, the hosts' default limit).
   Then the same evacuation with kvm01 allowed 4 outgoing moves at once
   (`max_outgoing`; kvm02 and kvm03 keep 2 incoming each), reported apart.
"""

import argparse
import os
import subprocess
import sys
import time
import uuid

from .stack import Stack

# A lab of its own: bench_migration's may be in use by another run.
LAB_NAME = "bench-evac"
GUESTS = [f"bench-evac{i}" for i in range(4)]
MIB = 1024 * 1024
GIB = 1024 * MIB


# -- 1. planning ---------------------------------------------------------------


def planning(vms=2000, hosts=100, runs=5):
    from bench import median, report
    from maintenance import planner

    facts = [
        planner.HostFacts(
            id=i,
            name=f"host{i:03d}",
            memory_capacity=1024 * GIB,
            memory_committed=(i % 10) * 32 * GIB,
            pools={
                "shared": planner.Pool("shared", "/srv/share", 50_000 * GIB, shared=True),
                "local": planner.Pool("local", "/var/lib/libvirt/images", 2_000 * GIB),
            },
            bridges=frozenset({"br0"}),
            networks=frozenset({"default"}),
        )
        for i in range(hosts)
    ]
    guests = [
        planner.Guest(
            id=j,
            name=f"vm{j:04d}",
            uuid=str(uuid.UUID(int=j)),
            host_id=0,
            state="running" if j % 10 else "shutoff",
            memory=(1 + j % 8) * GIB,
            disks=(planner.Disk(f"/x/vm{j}.qcow2", "shared" if j % 3 else "local", 20 * GIB),),
            bridges=frozenset({"br0"}),
        )
        for j in range(vms)
    ]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = planner.plan(guests, facts)
        times.append(time.perf_counter() - t0)
    report(
        "plan.planner_seconds_median",
        median(times),
        f"goal <= 1; {vms} VMs from one host over {hosts - 1} others: {len(result.moves)} placed, "
        f"{len(result.unplaced)} unplaced, {len(result.staying)} staying",
    )


def planning_from_the_database(vms=2000, hosts=100, runs=5):
    from django.utils import timezone

    from bench import median, report
    from hosts.models import Domain, Host, Network, StoragePool
    from maintenance import services

    Host.objects.bulk_create(
        Host(
            name=f"scale{i:03d}",
            uri=f"qemu+tls://scale{i:03d}.example.org/system",
            status="online",
            cpu_arch="x86_64",
            cpu_vendor="Intel",
            memory_total=1024 * GIB,
            last_sync=timezone.now(),
        )
        for i in range(hosts)
    )
    rows = list(Host.objects.filter(name__startswith="scale"))
    for h in rows:
        StoragePool.objects.create(
            host=h, name="shared", uuid=uuid.uuid4(), type="netfs", target_path="/srv/share", available=50_000 * GIB
        )
        Network.objects.create(host=h, name="default", uuid=uuid.uuid4(), bridge="br0")
    source = rows[0]
    Domain.objects.bulk_create(
        (
            Domain(
                uuid=uuid.uuid4(),
                name=f"db-vm{j:04d}",
                host=source if j < vms else rows[1 + j % (hosts - 1)],
                state="running",
                memory=(1 + j % 8) * GIB,
                max_memory=(1 + j % 8) * GIB,
                disks=[{"device": "disk", "path": f"/srv/share/vm{j}.qcow2", "pool": "shared", "allocation": GIB}],
                interfaces=[{"type": "bridge", "bridge": "br0", "network": "", "mac": "", "model": "virtio"}],
            )
            for j in range(vms + 10 * (hosts - 1))
        ),
        batch_size=1000,
    )
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = services.dry_run(source)
        times.append(time.perf_counter() - t0)
    report(
        "plan.dry_run_seconds_median",
        median(times),
        f"goal <= 1; the whole dry run from the database: {vms} VMs on one host, {hosts - 1} others "
        f"running 10 each; {len(result['plan'])} placed, {len(result['unplaced'])} unplaced",
    )
    Domain.objects.filter(host__name__startswith="scale").delete()
    Host.objects.filter(name__startswith="scale").delete()


# -- 2. on the lab ---------------------------------------------------------------


class LabBench:
    def __init__(self, lab):
        from django.contrib.auth.models import User

        from hosts.models import Host, StoragePool
        from hosts.sync import sync_host

        self.lab = lab
        self.retries = []  # moves tried a second time, with why
        self.user = User.objects.get_or_create(username="bench", defaults={"is_superuser": True})[0]
        self.hosts = {}
        for name in lab.hosts:
            host, _ = Host.objects.get_or_create(name=name, defaults={"uri": lab.uri(name)})
            if not sync_host(host).online:
                raise SystemExit(f"{name} is not reachable")
            self.hosts[name] = host
        # The lab's share is a FUSE mount in a dir pool: marked shared, as `make demo` does.
        StoragePool.objects.filter(name="shared").update(marked_shared=True)

    def sync(self):
        from hosts.sync import sync_hosts

        sync_hosts()

    def kvmweb(self):
        """Evacuate kvm01 as the API does; the worker runs it. Seconds to `succeeded`."""
        from maintenance import services

        self.sync()
        host = self.hosts["kvm01"]
        host.refresh_from_db()
        t0 = time.time()
        evacuation = services.enter_maintenance(self.user, host)
        self.wait(evacuation)
        if evacuation.status != "succeeded":
            raise SystemExit(f"evacuation {evacuation.pk} ended {evacuation.status}: {evacuation.error}")
        seconds = evacuation.finished_at.timestamp() - t0
        targets = {i["domain_name"]: i["target_name"] for i in evacuation.plan}

        def at(moment):
            return f"{moment.timestamp() - t0:.2f}"

        self.retries += [f"{i['domain_name']}: {i['error']}" for i in evacuation.plan if len(i["tried"]) > 1]
        self.timeline = f"started {at(evacuation.started_at)}; " + "; ".join(
            f"#{m.pk} asked {at(m.created_at)} running {at(m.started_at)} done {at(m.finished_at)}"
            for m in evacuation.migrations.order_by("created_at")
        )
        return seconds, targets, evacuation

    @staticmethod
    def wait(evacuation, timeout=300):
        deadline = time.monotonic() + timeout
        while evacuation.is_active and time.monotonic() < deadline:
            time.sleep(0.05)
            evacuation.refresh_from_db()

    def bring_back(self):
        """Leave maintenance and return the guests (untimed; it proves the return too)."""
        from maintenance import services

        host = self.hosts["kvm01"]
        host.refresh_from_db()
        evacuation = services.activate(self.user, host, return_vms=True)
        self.wait(evacuation)
        if evacuation.status != "succeeded" or len(evacuation.plan) != len(GUESTS):
            raise SystemExit(f"the return {evacuation.pk} ended {evacuation.status}: {evacuation.error}")

    def virsh(self, name, source, target):
        subprocess.run(
            [
                "virsh",
                "-c",
                self.lab.uri(source),
                "migrate",
                "--live",
                "--p2p",
                "--persistent",
                "--undefinesource",
                name,
                self.lab.uri(target),
            ],
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=300,
        )

    def by_hand(self, targets):
        """The four moved one by one with virsh; then back, untimed."""
        t0 = time.perf_counter()
        for name in GUESTS:
            self.virsh(name, "kvm01", targets[name])
        seconds = time.perf_counter() - t0
        for name in GUESTS:
            self.virsh(name, targets[name], "kvm01")
        return seconds

    def run(self, rounds):
        from bench import median, report

        for name in GUESTS:
            self.lab.make_guest("kvm01", name, memory_mib=256, disk="shared")
        # Untimed first: the plan's targets for virsh, and a warm first QEMU on each host.
        _, targets, _ = self.kvmweb()
        self.bring_back()
        ours, theirs, checks, moving, wide = [], [], [], [], []
        for i in range(rounds):
            for method in ("kvmweb", "virsh") if i % 2 == 0 else ("virsh", "kvmweb"):
                if method == "kvmweb":
                    seconds, _, evacuation = self.kvmweb()
                    ours.append(seconds)
                    for m in evacuation.migrations.all():
                        checks.append((m.started_at - m.created_at).total_seconds())
                        moving.append((m.finished_at - m.started_at).total_seconds())
                    self.bring_back()
                else:
                    theirs.append(self.by_hand(targets))
        from hosts.models import Host

        two_out = self.timeline
        Host.objects.filter(name="kvm01").update(max_outgoing=4)
        for _ in range(rounds):
            wide.append(self.kvmweb()[0])
            self.bring_back()
        Host.objects.filter(name="kvm01").update(max_outgoing=2)
        ticks = [self.lab.wait_ticking(name, timeout=30) for name in GUESTS]
        report(
            "evacuate.kvmweb_seconds_median",
            median(ours),
            "4 guests of 256 MiB, kvm01 to kvm02 and kvm03, request to succeeded: "
            + ", ".join(f"{s:.2f}" for s in ours),
        )
        report(
            "evacuate.virsh_one_by_one_seconds_median",
            median(theirs),
            "the same four, virsh migrate --live --p2p one after another: " + ", ".join(f"{s:.2f}" for s in theirs),
        )
        report("evacuate.kvmweb_vs_virsh_ratio", median(ours) / median(theirs), "goal <= 0.7")
        report(
            "evacuate.kvmweb_4_out_seconds_median",
            median(wide),
            "the same with kvm01's max_outgoing at 4: " + ", ".join(f"{s:.2f}" for s in wide),
        )
        report("evacuate.kvmweb_4_out_vs_virsh_ratio", median(wide) / median(theirs))
        report(
            "evacuate.kvmweb_move_checks_seconds_median",
            median(checks),
            "of each move: requested to running (connections, pre-flight checks)",
        )
        report("evacuate.kvmweb_move_running_seconds_median", median(moving), "of each move: running to succeeded")
        report("evacuate.kvmweb_timeline", two_out, "the last with 2 out at once, seconds from the request")
        report("evacuate.kvmweb_4_out_timeline", self.timeline, "the last with 4 out at once")
        report("evacuate.moves_tried_again", len(self.retries), " | ".join(self.retries)[:600])
        report("evacuate.targets", ", ".join(f"{n}->{t}" for n, t in sorted(targets.items())))
        report("evacuate.guests_still_ticking", ", ".join(f"tick {t[0]}" for t in ticks))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.bench_evacuation", description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep-lab", action="store_true", help="leave the bench lab up")
    parser.add_argument("--no-lab", action="store_true", help="only the planning figures")
    args = parser.parse_args(argv)

    from tests.lab.conftest_plugin import lab_unavailable_reason

    stack = Stack()
    try:
        stack.setup_django()
        planning()
        planning_from_the_database()
        reason = "--no-lab" if args.no_lab else lab_unavailable_reason()
        if reason:
            print(f"evacuate: skipped ({reason})", flush=True)
            return 0
        from tests.lab import Lab

        lab = Lab(name=LAB_NAME)
        lab.up()
        stack.start_worker()
        try:
            for name in GUESTS:
                lab.remove_guest(name)
            LabBench(lab).run(args.rounds)
        finally:
            for name in GUESTS:
                try:
                    lab.remove_guest(name)
                except Exception as e:  # noqa: BLE001 - the lab goes down next anyway
                    print(f"# could not remove {name}: {e}", file=sys.stderr)
            if not args.keep_lab:
                lab.down()
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("KVMWEB_LOG_LEVEL", "WARNING")
    sys.exit(main())
