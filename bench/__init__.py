"""kvmweb's benchmarks: `python -m bench` runs them all, `python -m bench.NAME` one.

Each prints `name: value` lines. The machines they run on are shared and
noisy, so where it makes sense a benchmark also measures a baseline in the
same process, minutes apart at most, and reports the ratio.
"""

import statistics
import sys


def report(name, value, note=""):
    """Print one result line: `name: value  (note)`."""
    if isinstance(value, float):
        value = f"{value:.3f}" if abs(value) < 10 else f"{value:.0f}"
    print(f"{name}: {value}" + (f"  ({note})" if note else ""), flush=True)


def median(values):
    return statistics.median(values)


def skip(name, reason):
    """Say why a benchmark did not run; it is not a failure."""
    print(f"{name}: skipped ({reason})", flush=True)
    sys.exit(0)
