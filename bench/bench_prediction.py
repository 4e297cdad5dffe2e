"""How well kvmweb predicts a live migration, on the lab.

    python -m bench.bench_prediction [--rates 0,8,24] [--limits 16,32,64] [--lab NAME] [--keep-lab]

Needs root on Linux and the lab's tools; elsewhere it says why and skips.

1. Measure: for a 256 MiB guest dirtying each rate (MiB/s, over a 128 MiB
   region), libvirt's page sampling over 1 s (x6) and 2 s (x3) periods: the
   mean and spread of each against the rate the guest was told to dirty.
2. Predict, then move: each guest, at each bandwidth limit, is migrated
   between kvm01 and kvm02 by kvmweb's engine (the same job a worker runs, in
   this process) with a plain pre-copy policy (300 ms allowed downtime, no
   auto-converge, 45 s deadline), after the pre-flight check ``prediction``
   predicted it. Prints a table of predicted against actual (duration as
   libvirt's job time, passes, downtime, converged or not) and the error.
   Goals: within ±25 % of the duration for converging migrations; every
   migration that did not converge predicted so before it started.
"""

import argparse
import statistics
import sys
import time

from bench.stack import Stack

MiB = 1024 * 1024
GUEST_MIB = 256
REGION_MIB = 128


def sampling(lab, name, host):
    from hosts.libvirt import open_host

    uuid = lab_uuid(lab, host, name)
    with open_host(lab.uri(host)) as conn:
        return conn.dirty_rate(uuid, seconds=1, repeats=6), conn.dirty_rate(uuid, seconds=2, repeats=3)


def lab_uuid(lab, host, name):
    with lab.connection(host) as conn:
        return conn.lookupByName(name).UUIDString()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.bench_prediction", description=__doc__)
    parser.add_argument("--rates", default="0,8,24", help="MiB/s the guests dirty")
    parser.add_argument("--limits", default="16,32,64", help="bandwidth limits, MiB/s")
    parser.add_argument("--lab", default="bench", help="the lab's name (reused if up)")
    parser.add_argument("--keep-lab", action="store_true", help="leave the lab up")
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")]
    limits = [int(b) for b in args.limits.split(",")]

    from bench import skip
    from tests.lab.conftest_plugin import lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason:
        skip("bench_prediction", reason)

    from tests.lab import Lab

    lab = Lab(name=args.lab, hosts=("kvm01", "kvm02"))
    stack = Stack()
    guests = [f"bench-pred-{r}" for r in rates]
    try:
        stack.setup_django()
        was_up = lab.is_up()
        lab.up()
        print(f"# lab {args.lab} {'reused' if was_up else 'started'}", flush=True)
        run(lab, rates, limits)
    finally:
        for name in guests:
            try:
                lab.remove_guest(name)
            except Exception as e:  # noqa: BLE001 - reported; the lab may go down next anyway
                print(f"# could not remove {name}: {e}", file=sys.stderr)
        if not args.keep_lab:
            lab.down()
        stack.stop()


def run(lab, rates, limits):
    from hosts.models import Domain
    from migrations_app import jobs, policies
    from migrations_app.models import Migration
    from tests.migration_helpers import register_lab, sync_all

    hosts = register_lab(lab)
    policies.POLICIES["bench"] = policies.Policy(
        name="bench",
        label="Plain pre-copy (benchmark)",
        description="300 ms allowed downtime, no auto-converge, 45 s deadline.",
        downtime_steps=(policies.DowntimeStep(0, 300),),
        deadline_seconds=45,
    )

    print("\n## 1. libvirt page sampling against the rate the guest dirties (MiB/s)", flush=True)
    print("| told | 1 s x6: mean (min-max) | 2 s x3: mean (min-max) |")
    print("| ---: | --- | --- |")
    for rate in rates:
        name = f"bench-pred-{rate}"
        lab.remove_guest(name)
        lab.make_guest(
            "kvm01",
            name,
            memory_mib=GUEST_MIB,
            disk="shared",
            dirty_mib=REGION_MIB if rate else 0,
            dirty_rate_mib=rate,
        )
        time.sleep(2)
        one, two = sampling(lab, name, "kvm01")
        print(f"| {rate} | {_spread(one)} | {_spread(two)} |", flush=True)

    print("\n## 2. Predicted against actual (plain pre-copy, 300 ms, 45 s deadline)", flush=True)
    print(
        "| dirties | limit | predicted | actual | duration error | passes (pred/act) | downtime ms (pred/act) | "
        "dirty rate used (source) |"
    )
    print("| ---: | ---: | --- | --- | ---: | --- | --- | --- |")
    errors, misses = [], []
    for rate in rates:
        name = f"bench-pred-{rate}"
        for limit in limits:
            sync_all()
            dom = Domain.objects.select_related("host").get(name=name, state="running")
            target = hosts["kvm02" if dom.host.name == "kvm01" else "kvm01"]
            migration = Migration.objects.create(
                domain=dom,
                domain_name=dom.name,
                domain_uuid=dom.uuid,
                source=dom.host,
                source_name=dom.host.name,
                target=target,
                target_name=target.name,
                mode="live",
                policy="bench",
                bandwidth_mib=limit,
            )
            jobs.run_migration(migration.pk)
            m = Migration.objects.get(pk=migration.pk)
            p = m.prediction or {}
            if not p:
                print(f"| {rate} | {limit} | no prediction: {m.error} | | | | | |", flush=True)
                continue
            converged = m.status == "succeeded"
            actual_s = (m.stats or {}).get("time_ms", 0) / 1000 if converged else None
            predicted = f"{'converges' if p.get('converges') else 'will not converge'}, {p.get('seconds')} s"
            actual = f"converged, {actual_s:.1f} s" if converged else f"{m.status} ({m.error_code})"
            error = ""
            if converged and p.get("converges") and actual_s:
                e = (p["seconds"] - actual_s) / actual_s
                errors.append(e)
                error = f"{e * 100:+.0f} %"
            if not converged and p.get("converges"):
                misses.append((rate, limit))
            if converged and not p.get("converges"):
                error = "predicted not to converge"
            dirty = p.get("inputs", {}).get("dirty_rate_bps", {})
            stats = m.stats or {}
            print(
                f"| {rate} | {limit} | {predicted} | {actual} | {error} | {p.get('passes')}/"
                f"{stats.get('iterations', '')} | {p.get('downtime_ms')}/{stats.get('downtime_ms', '')}"
                f" | {dirty.get('value', 0) / MiB:.1f} ({dirty.get('source', '')}) |",
                flush=True,
            )
            if not converged:
                lab.wait_ticking(name)
    if errors:
        within = sum(1 for e in errors if abs(e) <= 0.25)
        print(
            f"\nconverging: {within}/{len(errors)} within ±25 %; mean |error| "
            f"{statistics.mean(abs(e) for e in errors) * 100:.0f} %, worst {max(errors, key=abs) * 100:+.0f} %"
        )
    print(f"did not converge although predicted to: {len(misses)} {misses}", flush=True)


def _spread(values):
    mib = [v / MiB for v in values]
    return f"{statistics.mean(mib):.1f} ({min(mib):.0f}-{max(mib):.0f})"


if __name__ == "__main__":
    sys.exit(main())
