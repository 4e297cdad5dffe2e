"""Load: many users on the pages, the API and the dashboard socket while migrations run.

    python -m bench.load [--users 200] [--seconds 60] [--webs 1] [--no-lab]

Starts kvmweb as the Procfile does (daphne, one RQ worker; --webs N daphnes
on one socket bound once, as the demo's supervisor does), a private redis-server and a SQLite file (or the
database in DATABASE_URL), fills it with a viewer, a token, test-driver hosts
with 400 domains and 300 past migrations, and, where the lab can run (root,
Linux), a lab named `load` whose two guests migrate back and forth through the
API for the whole run. Then runs locust headless (bench/locustfile.py) for
--seconds with --users users, and prints one table: requests, failures, median,
p95, p99 and max per endpoint, and the dashboard messages' lag.

Goal: p95 <= 300 ms for pages and API, 0 errors, dashboard messages <= 1 s behind.
Only loopback targets; bounded in users and time.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from bench.stack import Stack, session_cookie
from kvmweb.procfile import BIN, ROOT

LAB_NAME = "load"
GUESTS = ("load-a", "load-b")
MAX_USERS = 1000
MAX_SECONDS = 600
# Settings of the load run's own: every simulated API user shares one token,
# so the per-user API throttle is opened wide (the load is the point here).
LOAD_ENV: dict = {"KVMWEB_API_USER_RATE": "1000000/minute", "KVMWEB_API_ANON_RATE": "1000000/minute"}


def fill(tmp):
    """Users, test-driver hosts with domains, and finished migrations to list."""
    from django.contrib.auth.models import Group, User
    from django.utils import timezone
    from knox.models import AuthToken

    from hosts.models import Domain, Host
    from hosts.sync import sync_host
    from migrations_app.models import Migration
    from tests.testdriver import write_host

    viewer = User.objects.create_user("load-viewer", password=uuid.uuid4().hex)
    viewer.groups.add(Group.objects.get(name="viewers"))
    operator = User.objects.create_user("load-operator", password=uuid.uuid4().hex)
    operator.groups.add(Group.objects.get(name="operators"))
    hosts = []
    for i in range(8):
        name = f"tdrv{i:02d}"
        host = Host.objects.create(name=name, uri=write_host(tmp, name, count=50))
        sync_host(host)
        hosts.append(host)
    domains = list(Domain.objects.select_related("host")[:300])
    now = timezone.now()
    Migration.objects.bulk_create(
        Migration(
            domain=d,
            domain_name=d.name,
            domain_uuid=uuid.uuid4(),
            source=d.host,
            source_name=d.host.name,
            target=hosts[(hosts.index(d.host) + 1) % len(hosts)],
            target_name=hosts[(hosts.index(d.host) + 1) % len(hosts)].name,
            mode="live",
            status="succeeded",
            phase="done",
            created_at=now,
            started_at=now,
            finished_at=now,
            stats={"time_ms": 900, "downtime_ms": 30, "data_transferred": 300 * 2**20},
        )
        for d in domains
    )
    return viewer, AuthToken.objects.create(user=operator, expiry=None)[1], [h.name for h in hosts]


class Migrator(threading.Thread):
    """Moves the lab's guests back and forth through the API until stopped."""

    def __init__(self, port, token, lab):
        super().__init__(daemon=True)
        self.port, self.token, self.lab = port, token, lab
        self.stopping = threading.Event()
        self.done, self.failed, self.ids = 0, [], []

    def api(self, method, path, body=None):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def run(self):
        hosts = {h["name"]: h["id"] for h in self.api("GET", "/api/hosts/?limit=100")["results"]}
        while not self.stopping.is_set():
            running = []
            for name in GUESTS:
                dom = self.api("GET", f"/api/domains/?name={name}")["results"][0]
                target = "kvm02" if dom["host"] == "kvm01" else "kvm01"
                body = {"domain": dom["id"], "target_host": hosts[target], "mode": "live"}
                running.append(self.api("POST", "/api/migrations/", body)["id"])
            for pk in running:
                self.ids.append(pk)
                while True:
                    state = self.api("GET", f"/api/migrations/{pk}/")
                    if state["status"] in ("succeeded", "failed", "cancelled"):
                        break
                    time.sleep(0.5)
                if state["status"] == "succeeded":
                    self.done += 1
                else:
                    self.failed.append(f"#{pk} {state['status']}: {state['error']}")
            # The worker refreshes both hosts' inventory just after success.
            time.sleep(1)


class DashboardWatcher(threading.Thread):
    """One more dashboard socket, outside locust: locust's users share one
    process and one core, so a message can wait in their socket for locust
    itself. This one measures the lag of every migration message on its own."""

    def __init__(self, port, session):
        super().__init__(daemon=True)
        self.port, self.session = port, session
        self.lags, self.error = [], None
        self.stopping = threading.Event()

    def run(self):
        import asyncio

        try:
            asyncio.run(self.watch())
        except Exception as e:  # noqa: BLE001 - reported with the results
            self.error = repr(e)

    async def watch(self):
        import asyncio

        from bench.bench_progress_latency import WebSocket

        origin = f"http://127.0.0.1:{self.port}"
        ws = await WebSocket.connect(
            "127.0.0.1", self.port, "/ws/dashboard/", {"Origin": origin, "Cookie": f"sessionid={self.session}"}
        )
        while not self.stopping.is_set():
            try:
                message = json.loads(await asyncio.wait_for(ws.recv(), timeout=1))
            except TimeoutError:
                continue
            sent_at = (message.get("migration") or {}).get("sent_at")
            if message.get("type") == "dashboard.migration" and sent_at:
                self.lags.append((time.time() - sent_at) * 1000)
        ws.close()


def table(stats_csv):
    rows = list(csv.DictReader(open(stats_csv)))
    header = f"{'endpoint':<34} {'requests':>8} {'fails':>6} {'median':>7} {'p95':>7} {'p99':>7} {'max':>7}"
    lines = [header, "-" * len(header)]
    for row in rows:
        name = f"{row['Type']} {row['Name']}" if row["Name"] != "Aggregated" else "all"
        lines.append(
            f"{name:<34} {row['Request Count']:>8} {row['Failure Count']:>6} {row['50%']:>7} "
            f"{row['95%']:>7} {row['99%']:>7} {float(row['Max Response Time']):>7.0f}"
        )
    return rows, "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--webs", type=int, default=1, help="daphne processes, serving one socket")
    parser.add_argument("--no-lab", action="store_true", help="no migrations running (no lab)")
    args = parser.parse_args(argv)
    if not (1 <= args.users <= MAX_USERS and 1 <= args.seconds <= MAX_SECONDS):
        parser.error(f"users 1..{MAX_USERS}, seconds 1..{MAX_SECONDS}")

    from bench import report
    from tests.lab.conftest_plugin import lab_unavailable_reason

    reason = "--no-lab" if args.no_lab else lab_unavailable_reason()
    lab = None
    stack = Stack(database_url=os.environ.get("DATABASE_URL"), env=LOAD_ENV)
    migrator = None
    try:
        stack.setup_django()
        viewer, token, host_names = fill(stack.dir)
        if reason is None:
            from tests.lab import Lab
            from tests.migration_helpers import register_lab

            lab = Lab(name=LAB_NAME)
            lab.up()
            for guest in GUESTS:
                lab.remove_guest(guest)
                lab.make_guest("kvm01", guest, memory_mib=256, disk="shared")
            register_lab(lab)
            host_names += list(lab.hosts)
        # Several daphnes serve one socket (bound once, as supervisord's --webs does).
        ports = [stack.start_web("web") if args.webs == 1 else stack.start_webs(args.webs)]
        stack.start_worker()
        from migrations_app.models import Migration

        migration_ids = [str(pk) for pk in Migration.objects.values_list("pk", flat=True)[:50]]
        if lab is not None:
            migrator = Migrator(ports[0], token, lab)
            migrator.start()
        env = {
            **os.environ,
            "KVMWEB_LOAD_SESSION": session_cookie(viewer),
            "KVMWEB_LOAD_TOKEN": token,
            "KVMWEB_LOAD_HOSTS": ",".join(host_names),
            "KVMWEB_LOAD_MIGRATIONS": ",".join(migration_ids),
        }
        # One locust process per address, each with its share of the users.
        runs = []
        for i, port in enumerate(ports):
            users = args.users // len(ports) + (1 if i < args.users % len(ports) else 0)
            prefix = stack.dir / f"locust{i}"
            argv = [
                str(BIN / "locust"),
                "-f",
                str(ROOT / "bench" / "locustfile.py"),
                "--headless",
                "--only-summary",
                "--users",
                str(users),
                "--spawn-rate",
                str(max(1, users // 5)),
                "--run-time",
                f"{args.seconds}s",
                "--stop-timeout",
                "5",
                "--host",
                f"http://127.0.0.1:{port}",
                "--csv",
                str(prefix),
                "--loglevel",
                "WARNING",
            ]
            log = open(stack.dir / f"locust{i}.log", "w")
            runs.append((prefix, subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)))
        watcher = DashboardWatcher(ports[0], env["KVMWEB_LOAD_SESSION"])
        watcher.start()
        load_before = os.getloadavg()
        for _, proc in runs:
            proc.wait(timeout=args.seconds + 120)
        load_after = os.getloadavg()
        watcher.stopping.set()
        watcher.join(timeout=10)
        print(
            f"# {args.users} users for {args.seconds} s on {args.webs} daphne(s), 1 worker; "
            f"migrations: {'running' if lab else 'none (' + reason + ')'}; "
            f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, {os.cpu_count()} CPUs"
        )
        worst_p95, failures, lag_p95 = 0.0, 0, 0.0
        for i, (prefix, _) in enumerate(runs):
            stats_csv = Path(f"{prefix}_stats.csv")
            if not stats_csv.exists():
                print((stack.dir / f"locust{i}.log").read_text()[-3000:])
                raise SystemExit("locust wrote no statistics")
            rows, text = table(stats_csv)
            print(f"\n{text}")
            for row in rows:
                if row["Name"] == "Aggregated":
                    continue
                failures += int(row["Failure Count"])
                p95 = float(row["95%"] or 0)
                if row["Type"] == "ws":
                    if row["Name"].endswith("lag"):
                        lag_p95 = max(lag_p95, p95)
                else:
                    worst_p95 = max(worst_p95, p95)
        print()
        report("load.pages_api_worst_p95_ms", worst_p95, "goal <= 300")
        report("load.failures", failures, "goal 0")
        report("load.dashboard_lag_p95_ms", lag_p95, "goal <= 1000; as locust's users saw it")
        if watcher.lags:
            from bench.bench_progress_latency import percentile

            report(
                "load.dashboard_lag_own_client_p95_ms",
                percentile(watcher.lags, 95),
                f"one more socket outside locust: {len(watcher.lags)} messages, median "
                f"{percentile(watcher.lags, 50):.0f} ms, max {max(watcher.lags):.0f} ms",
            )
        else:
            report("load.dashboard_lag_own_client_p95_ms", "no messages", watcher.error or "")
        if migrator is not None:
            migrator.stopping.set()
            migrator.join(timeout=120)
            report(
                "load.migrations_during_run",
                f"{migrator.done} succeeded, {len(migrator.failed)} not",
                "; ".join(migrator.failed[:3]),
            )
    finally:
        if migrator is not None:
            migrator.stopping.set()
        stack.stop()
        if lab is not None:
            for guest in GUESTS:
                try:
                    lab.remove_guest(guest)
                except Exception as e:  # noqa: BLE001 - the lab goes down next anyway
                    print(f"# could not remove {guest}: {e}", file=sys.stderr)
            lab.down()


if __name__ == "__main__":
    sys.exit(main())
