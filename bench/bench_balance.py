"""Balancing: the balance plan for 2,000 VMs over 100 hosts.

    python -m bench.bench_balance [--runs 5]

1. The planner alone (maintenance.planner.balance) over facts built in
   memory: 100 hosts of 1 TiB and 256 vCPUs, 2,000 running VMs of 1 to 8 GiB
   and 1 to 4 vCPUs placed unevenly (the first hosts hold most of them), two
   placement rules (ten VMs kept apart, five pinned to three hosts).
2. The whole dry run (`POST /api/cluster/balance/ {"dry_run": true}` without
   HTTP: the inventory, the capacity model and the rules read from the
   database, then the plan), the same cluster as rows.

Medians of 5 runs; goal <= 1 s. The load average is printed with them: the
machines are shared.
"""

import argparse
import os
import time
import uuid

from .stack import Stack

GIB = 1024**3


def host_of(j, vms, hosts):
    """Uneven on purpose: VM j's host index, most VMs on the first hosts."""
    return min(hosts - 1, int(hosts * (j / vms) ** 2))


def cluster(vms, hosts):
    from maintenance import planner

    guests = [
        planner.Guest(
            id=j,
            name=f"vm{j:04d}",
            uuid=str(uuid.UUID(int=j + 1)),
            host_id=host_of(j, vms, hosts),
            state="running",
            memory=(1 + j % 8) * GIB,
            vcpus=1 + j % 4,
            disks=(planner.Disk(f"/srv/share/vm{j}.qcow2", "shared", 20 * GIB),),
            bridges=frozenset({"br0"}),
        )
        for j in range(vms)
    ]
    memory, vcpus = [0] * hosts, [0] * hosts
    for g in guests:
        memory[g.host_id] += g.memory
        vcpus[g.host_id] += g.vcpus
    facts = [
        planner.HostFacts(
            id=i,
            name=f"host{i:03d}",
            memory_capacity=1024 * GIB,
            memory_committed=memory[i],
            vcpu_capacity=256,
            vcpus_committed=vcpus[i],
            pools={"shared": planner.Pool("shared", "/srv/share", 50_000 * GIB, shared=True)},
            bridges=frozenset({"br0"}),
        )
        for i in range(hosts)
    ]
    rules = [
        planner.Rule("replicas", planner.APART, frozenset(g.uuid for g in guests[:10])),
        planner.Rule("licensed", planner.PINNED, frozenset(g.uuid for g in guests[:5]), frozenset({0, 1, 2})),
    ]
    return guests, facts, rules


def load_average():
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def planning(vms=2000, hosts=100, runs=5):
    from bench import median, report
    from maintenance import planner

    guests, facts, rules = cluster(vms, hosts)
    where = {g.uuid: (g.host_id, g.name) for g in guests}
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = planner.balance(guests, facts, threshold=10, rules=rules, where=where)
        times.append(time.perf_counter() - t0)
    report(
        "balance.planner_seconds_median",
        median(times),
        f"goal <= 1; {vms} VMs over {hosts} hosts: {len(result.moves)} moves, memory spread "
        f"{result.before['memory_max_deviation']} -> {result.after['memory_max_deviation']} points, vCPU "
        f"{result.before['vcpu_max_deviation']} -> {result.after['vcpu_max_deviation']}, "
        f"balanced {result.balanced}; runs {', '.join(f'{t:.3f}' for t in times)}; {load_average()}",
    )


def planning_from_the_database(vms=2000, hosts=100, runs=5):
    from django.utils import timezone

    from bench import median, report
    from hosts.models import Domain, Host, Network, StoragePool
    from maintenance import facts
    from maintenance.models import PlacementRule

    guests, _, _ = cluster(vms, hosts)
    Host.objects.bulk_create(
        Host(
            name=f"bal{i:03d}",
            uri=f"qemu+tls://bal{i:03d}.example.org/system",
            status="online",
            cpu_arch="x86_64",
            cpu_vendor="Intel",
            cpu_count=64,
            memory_total=1024 * GIB,
            memory_reserved_mib=0,
            last_sync=timezone.now(),
        )
        for i in range(hosts)
    )
    rows = list(Host.objects.filter(name__startswith="bal").order_by("name"))
    for h in rows:
        StoragePool.objects.create(
            host=h, name="shared", uuid=uuid.uuid4(), type="netfs", target_path="/srv/share", available=50_000 * GIB
        )
        Network.objects.create(host=h, name="default", uuid=uuid.uuid4(), bridge="br0")
    Domain.objects.bulk_create(
        Domain(
            uuid=g.uuid,
            name=g.name,
            host=rows[g.host_id],
            state="running",
            memory=g.memory,
            max_memory=g.memory,
            vcpus=g.vcpus,
            disks=[{"device": "disk", "path": d.path, "pool": "shared", "allocation": GIB} for d in g.disks],
            interfaces=[{"type": "bridge", "bridge": "br0", "network": "", "mac": "", "model": "virtio"}],
        )
        for g in guests
    )
    PlacementRule.objects.create(name="replicas", kind="apart", vms=[g.uuid for g in guests[:10]])
    PlacementRule.objects.create(name="licensed", kind="pinned", vms=[g.uuid for g in guests[:5]]).hosts.add(*rows[:3])
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = facts.plan_balance(10)
        times.append(time.perf_counter() - t0)
    report(
        "balance.dry_run_seconds_median",
        median(times),
        f"goal <= 1; the inventory read from the database, then the plan: {len(result.moves)} moves, "
        f"balanced {result.balanced}; runs {', '.join(f'{t:.3f}' for t in times)}; {load_average()}",
    )


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.bench_balance", description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    stack = Stack()
    try:
        stack.setup_django()
        planning(runs=args.runs)
        planning_from_the_database(runs=args.runs)
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("KVMWEB_LOG_LEVEL", "WARNING")
    raise SystemExit(main())
