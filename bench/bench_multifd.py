"""Parallel connections (multifd): from which guest size do they pay off?

    python -m bench.bench_multifd [--sizes 256,1024,2048] [--connections 0,2,4] [--rounds 3]
                                  [--lab NAME] [--keep-lab]

Needs root on Linux and the lab's tools; elsewhere it says why and skips. It
starts a lab of two hosts (named `bench-multifd` unless --lab names another)
and takes it down at the end unless --keep-lab or the lab was already up.

For each guest size, one guest whose memory is 60 % filled with data (the
lab's dirtier writes every page of its block once, then touches 1 MiB/s: the
pages are not zero, so each is sent in full; the run waits until the guest
says the block is written), moved live back and forth between kvm01 and
kvm02 ROUNDS times with each number of connections (0: one connection, as
without VIR_MIGRATE_PARALLEL), with the flags kvmweb uses and no bandwidth
limit. Reports the median seconds of libvirt's own job time and the median
throughput (libvirt's memory_bps) and the data sent in full pages, per size and connection count, and the
smallest size at which a parallel setting was at least 10 % faster than one
connection at the median, every one of its runs faster than one connection's
median: the break-even to put in KVMWEB_MULTIFD_MIN_MIB (none: it never
paid off on this machine).
"""

import argparse
import os
import statistics
import sys
import time

MIB = 1024 * 1024
FILL_RATE_MIB = 1


def median(values):
    return statistics.median(values) if values else float("nan")


def wait_filled(log, seen, name, timeout=300):
    """Until the guest's dirtier says it has written every page (it prints "dirty:" after its memset)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log, "rb") as f:
            if f.read().count(b"dirty:") > seen:
                return
        time.sleep(1)
    raise SystemExit("%s did not fill its memory within %d s" % (name, timeout))


def migrate(lab, name, source, target, connections):
    import libvirt

    flags = (
        libvirt.VIR_MIGRATE_LIVE
        | libvirt.VIR_MIGRATE_PEER2PEER
        | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
    )
    params = {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://%s" % lab.address(target)}
    if connections:
        flags |= libvirt.VIR_MIGRATE_PARALLEL
        params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = connections
    with lab.connection(source) as conn:
        dom = conn.lookupByName(name)
        started = time.monotonic()
        dom.migrateToURI3(lab.uri(target), params, flags)
        wall = time.monotonic() - started
    with lab.connection(target) as conn:
        stats = conn.lookupByName(name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    seconds = (stats.get("time_elapsed") or wall * 1000) / 1000
    return seconds, stats.get("memory_bps") or 0, stats.get("memory_normal_bytes") or 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.bench_multifd", description=__doc__)
    parser.add_argument("--sizes", default="256,1024,2048", help="guest memory sizes in MiB")
    parser.add_argument("--connections", default="0,2,4", help="connection counts to compare (0: one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lab", default="bench-multifd")
    parser.add_argument("--keep-lab", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.lab.conftest_plugin import lab_unavailable_reason
    from tests.lab.lab import Lab

    reason = lab_unavailable_reason()
    if reason:
        print("bench_multifd: skipped (%s)" % reason)
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    counts = [int(c) for c in args.connections.split(",") if c]
    lab = Lab(name=args.lab, hosts=("kvm01", "kvm02"))
    was_up = lab.is_up()
    lab.up()
    results = {}
    try:
        for size in sizes:
            name = "multifd-%d" % size
            if lab.where(name):
                lab.remove_guest(name)
            # Fill 60 % of it: the guest's kernel and init need the rest (more and the dirtier's malloc fails).
            fill = int(size * 0.6)
            log = lab.serial_log("kvm01", name)
            seen = open(log, "rb").read().count(b"dirty:") if os.path.exists(log) else 0
            lab.make_guest("kvm01", name, memory_mib=size, disk="shared", dirty_mib=fill, dirty_rate_mib=FILL_RATE_MIB)
            wait_filled(log, seen, name)
            try:
                for count in counts:
                    runs = []
                    for _ in range(args.rounds):
                        here = lab.where(name)[0]
                        there = "kvm02" if here == "kvm01" else "kvm01"
                        runs.append(migrate(lab, name, here, there, count))
                    results[(size, count)] = runs
                    print(
                        "size %5d MiB  connections %-2s  median %6.2f s  %7.1f MiB/s  %5.0f MiB of data  (runs: %s)"
                        % (
                            size,
                            count or 1,
                            median([r[0] for r in runs]),
                            median([r[1] for r in runs]) / MIB,
                            median([r[2] for r in runs]) / MIB,
                            ", ".join("%.2f" % r[0] for r in runs),
                        ),
                        flush=True,
                    )
            finally:
                lab.remove_guest(name)
    finally:
        if not (was_up or args.keep_lab):
            lab.down()
    break_even = None
    for size in sizes:
        single = [r[0] for r in results.get((size, 0), [])]
        for count in counts:
            runs = [r[0] for r in results.get((size, count), [])] if count else []
            # Faster by 10 % at the median, and every run faster than one connection's median:
            # on a loaded machine one lucky run is no break-even.
            if runs and single and median(runs) <= 0.9 * median(single) and max(runs) < median(single):
                break_even = size
                break
        if break_even is not None:
            break
    if break_even is None:
        print("break-even: none: parallel connections were never 10 % faster than one connection here")
    else:
        print("break-even: %d MiB (KVMWEB_MULTIFD_MIN_MIB)" % break_even)
    return 0


if __name__ == "__main__":
    sys.exit(main())
