"""Scale-out: kvmweb as several processes on one PostgreSQL and one Redis, with faults.

    python -m bench.scale [--rounds plain,kill,redis,postgres] [--keep-lab]

Needs root on Linux (the lab, a private PostgreSQL cluster). Starts:

- a PostgreSQL cluster and a redis-server of its own (so it may restart them),
- a lab named `scale` of four hosts, three 128 MiB guests on each (shared disk),
  every host allowing one migration in and one out at a time,
- two daphnes, three RQ workers, and every other Procfile line once (the host
  watcher, where it exists), all started as the Procfile says, with
  KVMWEB_SYNC_INTERVAL=5 so that the periodic reconcile runs often.

Each round asks for twelve live migrations at once (every guest to the next
host), half through each daphne, bandwidth capped so that they overlap; then,
by round:

- ``plain``: nothing else;
- ``kill``: once migrations run, SIGKILL one worker (and the work horse running
  its migration) and one daphne; both are started again after the round;
- ``redis``: restart Redis (nothing persisted: queued jobs are lost) mid-migration;
- ``postgres``: restart PostgreSQL (every connection cut) mid-migration.

Meanwhile a sampler reads libvirt's job info on every host five times a second:
the most migrations seen at once out of and into each host must never pass the
host's limits. After each round every migration must reach a final state;
a succeeded one's guest runs on its target only, a failed or cancelled one's on
its source only; every guest runs on exactly one host and the inventory says
the same; no migration was started twice (one `start` audit entry at most, one
run of its job across the workers' logs). Prints one line per round and exits
non-zero if any of that fails.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

from bench.stack import Stack
from kvmweb.procfile import procfile
from tests.localservers import PrivatePostgres

LAB_NAME = "scale"
HOSTS = ("kvm01", "kvm02", "kvm03", "kvm04")
GUESTS_PER_HOST = 3
GUEST_MIB = 128
BANDWIDTH_MIB = 24  # 128 MiB at 24 MiB/s: about 5 s each, so they overlap
SETTLE_TIMEOUT = 240
ROUNDS = ("plain", "kill", "redis", "postgres")
FINAL = ("succeeded", "failed", "cancelled")


class Sampler(threading.Thread):
    """Counts, on every host, the domains with a libvirt job out of and into it."""

    def __init__(self, lab):
        super().__init__(daemon=True)
        self.lab = lab
        self.stopping = threading.Event()
        self.origin = {}  # guest -> host it started the round on
        self.max_out = Counter()
        self.max_in = Counter()
        self.samples = 0
        self.errors = 0

    def reset(self, origin):
        self.origin = dict(origin)
        self.max_out, self.max_in = Counter(), Counter()

    def run(self):
        import libvirt

        libvirt.registerErrorHandler(lambda *args: None, None)  # errors are expected here; not on stderr
        conns = {}
        while not self.stopping.is_set():
            out, into = Counter(), Counter()
            for host in HOSTS:
                try:
                    if host not in conns:
                        conns[host] = self.lab.connect(host, timeout=5)
                    domains = conns[host].listAllDomains(0)
                except libvirt.libvirtError:
                    self.errors += 1
                    conns.pop(host, None)
                    continue
                for dom in domains:
                    try:
                        active = dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE
                    except libvirt.libvirtError as e:
                        # The target refuses statistics of an incoming migration
                        # ("available only on the source host"): that is one.
                        if e.get_error_code() == libvirt.VIR_ERR_OPERATION_UNSUPPORTED:
                            into[host] += 1
                        continue  # otherwise the domain has just left this host
                    if active and self.origin.get(dom.name()) == host:
                        out[host] += 1
                    elif active:
                        into[host] += 1
            for host in HOSTS:
                self.max_out[host] = max(self.max_out[host], out[host])
                self.max_in[host] = max(self.max_in[host], into[host])
            self.samples += 1
            time.sleep(0.2)
        for conn in conns.values():
            conn.close()


class Scale:
    def __init__(self, lab, stack, pg, redis):
        self.lab, self.stack, self.pg, self.redis = lab, stack, pg, redis
        self.failures = []
        self.ran_by = defaultdict(Counter)  # round -> worker -> migrations it started

    # -- set-up ------------------------------------------------------------

    def setup(self):
        self.stack.setup_django()
        from django.contrib.auth.models import Group, User
        from knox.models import AuthToken

        from hosts.models import Host
        from tests.migration_helpers import register_lab

        operator = User.objects.create_user("scale-operator")
        operator.groups.add(Group.objects.get(name="operators"))
        self.token = AuthToken.objects.create(user=operator, expiry=None)[1]
        for i, host in enumerate(HOSTS):
            for n in range(GUESTS_PER_HOST):
                self.lab.remove_guest(f"scale-{i + 1}{n}")
                self.lab.make_guest(host, f"scale-{i + 1}{n}", memory_mib=GUEST_MIB, disk="shared")
        register_lab(self.lab)
        Host.objects.update(max_incoming=1, max_outgoing=1)
        self.ports = [self.stack.start_web("web1"), self.stack.start_web("web2")]
        self.workers = ["worker1", "worker2", "worker3"]
        for name in self.workers:
            self.stack.start_worker(name)
        self.others = [name for name in procfile() if name not in ("web", "worker")]
        for name in self.others:
            self.stack.spawn(name, self.stack_argv(name))
        self.sampler = Sampler(self.lab)
        self.sampler.start()

    def stack_argv(self, name):
        from bench.stack import procfile_argv

        return procfile_argv(name)

    # -- one round ---------------------------------------------------------

    def api(self, port, method, path, body=None):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.load(response)
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path} {body or ''}: HTTP {e.code} {e.read()[:500]!r}") from None

    def placement(self):
        """guest -> the hosts libvirt runs it on."""
        where = defaultdict(list)
        for host in HOSTS:
            with self.lab.connection(host) as conn:
                for dom in conn.listAllDomains(0):
                    if dom.name().startswith("scale-") and dom.isActive():
                        where[dom.name()].append(host)
        return where

    def round(self, kind):
        from hosts.models import Domain, Host
        from migrations_app.models import AuditEntry, Migration

        where = self.placement()
        origin = {guest: hosts[0] for guest, hosts in where.items()}
        self.sampler.reset(origin)
        hosts = {h.name: h.pk for h in Host.objects.all()}
        domains = {d.name: d.pk for d in Domain.objects.filter(name__startswith="scale-")}
        requests = []
        for i, guest in enumerate(sorted(origin)):
            target = HOSTS[(HOSTS.index(origin[guest]) + 1) % len(HOSTS)]
            body = {"domain": domains[guest], "target_host": hosts[target], "mode": "live"}
            body["bandwidth_mib"] = BANDWIDTH_MIB
            requests.append((self.ports[i % 2], body))
        started = time.monotonic()
        with ThreadPoolExecutor(len(requests)) as pool:
            ids = list(pool.map(lambda r: self.api(r[0], "POST", "/api/migrations/", r[1])["id"], requests))
        accepted = time.monotonic() - started
        fault = self.fault(kind, ids)
        # Settled: every migration in a final state.
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            try:
                statuses = dict(Migration.objects.filter(pk__in=ids).values_list("pk", "status"))
            except Exception:  # noqa: BLE001 - PostgreSQL restarting: ask again
                from django.db import connection

                connection.close()
                statuses = {}
            if statuses and all(s in FINAL for s in statuses.values()):
                break
            if time.monotonic() > deadline:
                self.fail(kind, f"not settled after {SETTLE_TIMEOUT} s: {Counter(statuses.values())}")
                break
            time.sleep(0.5)
        settled = time.monotonic() - started
        self.restore(kind)
        time.sleep(2)  # the workers refresh both hosts' inventory just after each migration
        self.check(kind, ids, origin, Migration, AuditEntry)
        counts = Counter(Migration.objects.filter(pk__in=ids).values_list("status", flat=True))
        limits = ", ".join(f"{h} out {self.sampler.max_out[h]} in {self.sampler.max_in[h]}" for h in HOSTS)
        print(
            f"scale.{kind}: 12 requests accepted in {accepted:.1f} s, settled in {settled:.0f} s: "
            f"{dict(counts)}; {fault}; most at once (limit 1 each): {limits}; "
            f"started by {len(self.ran_by[kind])} workers: {sorted(self.ran_by[kind].values(), reverse=True)}",
            flush=True,
        )

    def fault(self, kind, ids):
        from migrations_app.models import Migration

        if kind == "plain":
            return "no fault"
        # Mid-run: once two migrations are transferring.
        deadline = time.monotonic() + 60
        while Migration.objects.filter(pk__in=ids, status="running").count() < 2:
            if time.monotonic() > deadline:
                return "no fault (never two running)"
            time.sleep(0.1)
        time.sleep(1)
        if kind == "kill":
            victim = self.busy_worker()
            self.stack.kill("web1")
            return f"SIGKILLed {victim} and its work horse, and web1"
        if kind == "redis":
            self.redis.restart()
            return "Redis restarted (empty)"
        if kind == "postgres":
            t0 = time.monotonic()
            self.pg.restart()
            return f"PostgreSQL restarted ({time.monotonic() - t0:.1f} s)"
        raise ValueError(kind)

    def busy_worker(self):
        """SIGKILL a worker whose work horse runs a migration, and the horse."""
        for name in self.workers:
            proc = self.stack.procs[name]
            horses = children(proc.pid)
            if horses:
                for pid in horses:
                    os.kill(pid, signal.SIGKILL)
                self.stack.kill(name)
                return name
        self.stack.kill(self.workers[0])
        return f"{self.workers[0]} (idle)"

    def restore(self, kind):
        if kind == "kill":
            for name in self.workers:
                if self.stack.procs[name].poll() is not None:
                    self.stack.start_worker(name)
            port = self.stack.start_web("web1")
            self.ports[0] = port

    # -- checks ------------------------------------------------------------

    def fail(self, kind, message):
        self.failures.append(f"{kind}: {message}")
        print(f"scale.{kind}: FAILED: {message}", flush=True)

    def check(self, kind, ids, origin, Migration, AuditEntry):
        from hosts.models import Domain, Host
        from hosts.sync import sync_host

        where = self.placement()
        for m in Migration.objects.filter(pk__in=ids):
            expected = m.target_name if m.status == "succeeded" else m.source_name
            if where.get(m.domain_name) != [expected]:
                self.fail(kind, f"#{m.pk} {m.domain_name} {m.status} but runs on {where.get(m.domain_name)}")
            # The engine records each start, after its claim, with the worker
            # that runs it: one start, by one worker, whatever RQ did.
            starts = list(AuditEntry.objects.filter(migration=m, action="start").values_list("data", flat=True))
            if len(starts) > 1 or (m.status == "succeeded" and len(starts) != 1):
                self.fail(kind, f"#{m.pk} {m.status}, started {len(starts)} times: {starts}")
            for data in starts:
                self.ran_by[kind][data.get("worker")] += 1
            if m.status != "succeeded":
                print(f"#   #{m.pk} {m.domain_name} {m.status}: {m.error[:200]}", flush=True)
        for guest in origin:
            if len(where.get(guest, [])) != 1:
                self.fail(kind, f"{guest} runs on {where.get(guest)}")
        for host in Host.objects.all():
            sync_host(host)
        for d in Domain.objects.filter(name__startswith="scale-").select_related("host"):
            if [d.host.name] != where.get(d.name):
                self.fail(kind, f"inventory puts {d.name} on {d.host.name}, libvirt on {where.get(d.name)}")
        for host in HOSTS:
            if self.sampler.max_out[host] > 1 or self.sampler.max_in[host] > 1:
                self.fail(
                    kind,
                    f"{host} ran {self.sampler.max_out[host]} out, {self.sampler.max_in[host]} in at once (limit 1)",
                )


def children(pid):
    """Direct children of a process, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", default=",".join(ROUNDS))
    parser.add_argument("--keep-lab", action="store_true")
    args = parser.parse_args(argv)
    rounds = [r for r in args.rounds.split(",") if r]
    if set(rounds) - set(ROUNDS):
        parser.error(f"rounds are {', '.join(ROUNDS)}")

    from bench import skip
    from tests.lab.conftest_plugin import lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason:
        skip("scale", reason)
    from tests.lab import Lab

    lab = Lab(name=LAB_NAME, hosts=HOSTS)
    pg = PrivatePostgres()
    stack = None
    try:
        t0 = time.monotonic()
        lab.up()
        stack = Stack(database_url=pg.url, env={"KVMWEB_SYNC_INTERVAL": "5", "KVMWEB_API_USER_RATE": "100000/minute"})
        scale = Scale(lab, stack, pg, stack.redis)
        scale.setup()
        print(
            f"# scale: {len(HOSTS)} lab hosts, {len(HOSTS) * GUESTS_PER_HOST} guests, 2 daphne, 3 workers"
            + (f", {', '.join(scale.others)}" if scale.others else ", no host watcher (not in the Procfile)")
            + f", PostgreSQL, Redis; ready in {time.monotonic() - t0:.0f} s; load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        for kind in rounds:
            scale.round(kind)
        scale.sampler.stopping.set()
        print(f"# sampler: {scale.sampler.samples} samples of every host, {scale.sampler.errors} errors", flush=True)
        if scale.failures:
            print(f"scale: FAILED ({len(scale.failures)} problems)", flush=True)
            return 1
        print("scale: ok", flush=True)
        return 0
    finally:
        if stack is not None:
            stack.stop(keep_dir=True)
            print(f"# logs: {stack.dir}", file=sys.stderr)
        pg.remove()
        if not args.keep_lab:
            lab.down()


if __name__ == "__main__":
    sys.exit(main())
