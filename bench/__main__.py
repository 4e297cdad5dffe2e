"""python -m bench: run every benchmark, each in its own process, and print its lines.

    python -m bench [NAME...]     # e.g. python -m bench bench_inventory

A benchmark that cannot run here (no root for the lab, a module not written
yet) says so and is skipped; one that fails makes the exit status non-zero.
"""

import importlib.util
import subprocess
import sys
import time

BENCHMARKS = [
    "bench_inventory",
    "bench_migration",
    "bench_progress_latency",
    "bench_evacuation",
    "bench_balance",
    "bench_watch",
    "bench_connections",
]


def main(argv=None):
    names = (argv if argv is not None else sys.argv[1:]) or BENCHMARKS
    failed = []
    for name in names:
        module = f"bench.{name}"
        if importlib.util.find_spec(module) is None:
            print(f"{name}: skipped (not written yet)", flush=True)
            continue
        print(f"# {module}", flush=True)
        started = time.monotonic()
        # Each in a process of its own: each sets up Django with its own database.
        rc = subprocess.call([sys.executable, "-m", module])
        print(
            f"# {module}: {'done' if rc == 0 else f'FAILED (exit {rc})'} in {time.monotonic() - started:.0f} s",
            flush=True,
        )
        if rc:
            failed.append(name)
    if failed:
        print(f"bench: failed: {', '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
