"""What a secure connection costs: opening a lab host over SSH and TLS against plain TCP.

    python -m bench.bench_connections [--rounds 20] [--keep-lab]

Needs root on Linux and the lab's tools; elsewhere it says why and skips. It
starts a lab named `bench-conn` (taken down at the end). For each transport,
kvmweb's own open_host (allowlist, probe, libvirt.open with kvmweb's options,
one call, close) ROUNDS times, alternating transports round by round; reports
the medians and the ratios to qemu+tcp in the same run, and one inventory
sync of a host per transport.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

LAB_NAME = "bench-conn"


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--keep-lab", action="store_true")
    args = parser.parse_args(argv)

    from tests.lab.conftest_plugin import lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason:
        print(f"connections: skipped ({reason})")
        return 0
    directory = tempfile.mkdtemp(prefix="kvmweb-bench-conn-")
    os.environ.update(
        DJANGO_SETTINGS_MODULE="kvmweb.settings",
        KVMWEB_VAR_DIR=directory,
        DATABASE_URL=f"sqlite:///{directory}/bench.sqlite3",
        KVMWEB_SYNC_INTERVAL="0",
        KVMWEB_ALLOW_TCP="true",
        KVMWEB_LOG_LEVEL=os.environ.get("KVMWEB_LOG_LEVEL", "WARNING"),
    )
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from tests.lab import Lab

    call_command("migrate", verbosity=0)
    lab = Lab(name=LAB_NAME, hosts=("kvm01", "kvm02"))
    lab.up()
    try:
        settings.KVMWEB_TLS_DIR = lab.tls_client_dir
        run(lab, args.rounds)
    finally:
        if not args.keep_lab:
            lab.down()
    return 0


def run(lab, rounds):
    from hosts import sshkeys
    from hosts.libvirt import open_host
    from hosts.models import Host
    from hosts.sync import sync_host

    host = "kvm01"
    lab.authorize_key(host, sshkeys.public_key())
    uris = {"tcp": lab.uri(host), "tls": lab.tls_uri(host), "ssh": lab.ssh_uri(host)}
    rows = {}
    for transport, uri in uris.items():
        row = Host.objects.create(name=f"{host}-{transport}", uri=uri)
        if transport == "ssh":
            row.ssh_pinned_fingerprint = lab.ssh_fingerprint(host)
            row.save()
        result = sync_host(row)
        if not result.online:
            raise SystemExit(f"{transport}: {host} is not reachable: {result.error}")
        rows[transport] = row

    times = {t: [] for t in uris}
    for i in range(rounds):
        order = list(uris) if i % 2 == 0 else list(reversed(uris))
        for transport in order:
            started = time.perf_counter()
            with open_host(uris[transport]) as conn:
                conn.hostname()
            times[transport].append(time.perf_counter() - started)
    base = statistics.median(times["tcp"])
    for transport, samples in times.items():
        median = statistics.median(samples)
        note = "baseline" if transport == "tcp" else f"ratio to tcp {median / base:.1f}"
        print(f"connections.open_{transport}_ms: {median * 1000:.1f}  ({note}; open, one call, close; {rounds} rounds)")
    for transport, row in rows.items():
        started = time.perf_counter()
        sync_host(row)
        print(f"connections.sync_{transport}_ms: {(time.perf_counter() - started) * 1000:.0f}  (one inventory sync)")


if __name__ == "__main__":
    sys.exit(main())
