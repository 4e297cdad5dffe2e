"""Inventory sync and page times at scale.

    python -m bench.bench_inventory [--hosts 100] [--domains 100] [--requests 10]

1. Sync of HOSTS x DOMAINS domains from libvirt test-driver XML files into a
   fresh SQLite database: domains per second for the first sync and for a
   re-sync (goal >= 3,000/s), against a baseline in the same process: the same
   hosts read through libvirt with no database at all.
2. With those domains in the database, the server time of the dashboard, the
   domain list and the API's domain list for a logged-in viewer: the median of
   REQUESTS requests each (goal <= 250 ms), and the SQL queries per page.
"""

import argparse
import os
import sys
import tempfile
import time


def setup_django(directory):
    # A database of its own, whatever the environment says: the benchmark
    # must never touch the demo's or production's.
    os.environ["KVMWEB_VAR_DIR"] = directory
    os.environ["DATABASE_URL"] = f"sqlite:///{directory}/bench.sqlite3"
    os.environ["KVMWEB_SYNC_INTERVAL"] = "0"
    os.environ["KVMWEB_ALLOW_TEST_DRIVER"] = "true"  # its hosts are test-driver files below directory
    os.environ["KVMWEB_TEST_DRIVER_DIR"] = directory
    os.environ.setdefault("KVMWEB_LOG_LEVEL", "WARNING")
    os.environ["DJANGO_SETTINGS_MODULE"] = "kvmweb.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def read_raw(uris):
    """Baseline 1: libvirt-python alone, opening each host and reading every domain's XML."""
    import libvirt

    count = 0
    for uri in uris:
        conn = libvirt.open(uri)
        try:
            for dom in conn.listAllDomains(0):
                dom.XMLDesc(0)
                dom.info()
                count += 1
        finally:
            conn.close()
    return count


def open_only(uris):
    """Baseline 0: only opening each host's connection (the test driver parses its file)."""
    import libvirt

    for uri in uris:
        libvirt.open(uri).close()
    return 0


def read_seam(uris):
    """Baseline 2: the same inventory kvmweb reads, through its libvirt seam, no database."""
    from hosts.libvirt import open_host

    count = 0
    for uri in uris:
        with open_host(uri) as conn:
            count += len(conn.inventory().domains)
    return count


def sync_all(hosts):
    """kvmweb's own sync of every host (what the worker's refresh runs)."""
    from hosts.sync import sync_hosts

    count = 0
    for result in sync_hosts([h.name for h in hosts]):
        if not result.online:
            raise SystemExit(f"{result.host} could not be read: {result.error}")
        count += result.domains
    return count


def timed(fn, *args):
    t0 = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t0


def bench_sync(directory, n_hosts, n_domains):
    from bench import report
    from hosts.models import Host
    from tests import testdriver

    xml_dir = os.path.join(directory, "hosts")
    os.makedirs(xml_dir)
    uris = [testdriver.write_host(xml_dir, f"h{i:03d}", count=n_domains) for i in range(n_hosts)]
    hosts = [Host.objects.create(name=f"h{i:03d}", uri=uri) for i, uri in enumerate(uris)]
    total = n_hosts * n_domains

    # Warm up libvirt's test driver and the imports, outside the timings.
    read_seam(uris[:1])

    _, open_s = timed(open_only, uris)
    raw_count, raw_s = timed(read_raw, uris)
    seam_count, seam_s = timed(read_seam, uris)
    first_count, first_s = timed(sync_all, hosts)
    again_count, again_s = timed(sync_all, hosts)
    assert raw_count == seam_count == first_count == again_count == total, (
        raw_count,
        seam_count,
        first_count,
        again_count,
    )

    where = f"{n_hosts} hosts x {n_domains} domains"
    report(
        "inventory.libvirt_open_ms_per_host",
        open_s / n_hosts * 1000,
        "baseline: libvirt.open of one test-driver file; part of every read below",
    )
    report(
        "inventory.libvirt_read_domains_per_s",
        total / raw_s,
        f"baseline: libvirt-python list + XMLDesc + info, {where}, {raw_s:.2f} s",
    )
    report(
        "inventory.seam_read_domains_per_s",
        total / seam_s,
        f"baseline: kvmweb's libvirt seam, no database, {seam_s:.2f} s",
    )
    report(
        "inventory.first_sync_domains_per_s",
        total / first_s,
        f"goal >= 3000; into an empty SQLite database, {first_s:.2f} s",
    )
    report("inventory.resync_domains_per_s", total / again_s, f"goal >= 3000; nothing changed, {again_s:.2f} s")
    report(
        "inventory.first_sync_vs_seam_read", first_s / seam_s, "time ratio: what the database adds to reading libvirt"
    )
    report("inventory.resync_vs_seam_read", again_s / seam_s, "time ratio")
    report(
        "inventory.first_sync_domains_per_s_without_open",
        total / max(first_s - open_s, 1e-9),
        "derived: sync time less the connection opens measured above",
    )
    report("inventory.resync_domains_per_s_without_open", total / max(again_s - open_s, 1e-9), "derived")
    return total


def bench_pages(n_requests, n_domains):
    from django.contrib.auth.models import Group, User
    from django.db import connection
    from django.test import Client

    from bench import median, report

    viewer = User.objects.create_user("bench-viewer", password="x")
    viewer.groups.add(Group.objects.get(name="viewers"))
    # The test client's default host, 'testserver', is not an allowed host
    # outside the test runner; a real one keeps every check in place.
    client = Client(HTTP_HOST="localhost")
    client.force_login(viewer)

    pages = [
        ("pages.dashboard_ms", "/"),
        ("pages.domain_list_ms", "/domains/"),
        ("pages.domain_list_filtered_ms", "/domains/?q=vm05&state=running"),
        ("pages.api_domains_ms", "/api/domains/"),
    ]
    for name, url in pages:
        response = client.get(url)  # warm: templates, URL resolver
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}")
        queries = []
        with connection.execute_wrapper(lambda execute, sql, *a, q=queries: q.append(sql) or execute(sql, *a)):
            client.get(url)
        times = []
        for _ in range(n_requests):
            t0 = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200
        report(
            name,
            median(times),
            f"goal <= 250; median of {n_requests} GET {url} as a viewer, {n_domains} domains, "
            f"{len(queries)} SQL queries, {len(response.content) // 1024} KiB",
        )


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.bench_inventory", description=__doc__)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--domains", type=int, default=100, help="per host")
    parser.add_argument("--requests", type=int, default=10, help="per page")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kvmweb-bench-") as directory:
        setup_django(directory)
        total = bench_sync(directory, args.hosts, args.domains)
        bench_pages(args.requests, total)


if __name__ == "__main__":
    sys.exit(main())
