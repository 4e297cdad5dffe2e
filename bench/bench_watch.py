"""watch_hosts: how late the dashboard hears of a change made with virsh, and
what watching costs per host.

    python -m bench.bench_watch [--rounds 10] [--hosts 100] [--keep-lab] [--only cost|latency]

1. On the lab (root on Linux; skipped elsewhere): daphne and watch_hosts
   started from the Procfile's lines (bench/stack.py), a private redis-server,
   a SQLite file; a viewer's WebSocket on /ws/dashboard/. ROUNDS times each:
   `virsh start`, `virsh destroy` of a guest on kvm01, and `virsh migrate
   --live` of a running guest between kvm01 and kvm02 (the usual way by hand),
   each run inside the host. Latency is from the moment virsh returns to the
   moment the socket has the dashboard.domain message saying the new state
   (0 when the message was there first: libvirt's event fires before virsh
   returns). No sync runs meanwhile (KVMWEB_SYNC_INTERVAL=0, no worker).
   Reports median and p95 per command; goal p95 <= 1 s.
2. watch_hosts watching HOSTS test-driver hosts (test:///<file>, 5 VMs each)
   and, as the baseline in the same run, 1 such host: threads and resident
   memory once every host is online, and the cost of each further host.
"""

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from bench import median, report
from bench.bench_progress_latency import WebSocket, percentile
from bench.stack import Stack, procfile_argv, session_cookie

LAB_NAME = "bench-watch"
GUEST = "bench-watch"


def virsh(lab, host, *args):
    return lab.host_exec(host, "virsh", "-c", "qemu:///system", *args, timeout=120)


class Feed:
    """The dashboard socket, read in a background asyncio loop of its own."""

    def __init__(self, port, cookie):
        self.port, self.cookie = port, cookie
        self.messages = []  # (monotonic arrival, message)
        self.loop = asyncio.new_event_loop()
        import threading

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self.loop).result(30)

    async def _open(self):
        self.ws = await WebSocket.connect(
            "127.0.0.1",
            self.port,
            "/ws/dashboard/",
            {"Origin": f"http://127.0.0.1:{self.port}", "Cookie": f"sessionid={self.cookie}"},
        )
        self.loop.create_task(self._read())

    async def _read(self):
        try:
            while True:
                text = await self.ws.recv()
                self.messages.append((time.monotonic(), json.loads(text)))
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # daphne stopped at the end of the run

    def wait(self, since, predicate, timeout=60):
        """The arrival time of the first message after index ``since`` that matches."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for arrived, message in self.messages[since:]:
                domain = message.get("domain")
                if message.get("type") == "dashboard.domain" and domain and predicate(domain):
                    return arrived
            time.sleep(0.005)
        raise RuntimeError("the dashboard never heard of it")


def latency(lab, stack, rounds):
    from django.contrib.auth.models import Group, User

    from hosts.models import Domain, Host

    for name in lab.hosts:
        Host.objects.create(name=name, uri=lab.uri(name))
    user = User.objects.create_user("bench", password="bench-password-1")
    user.groups.add(Group.objects.get(name="viewers"))
    lab.make_guest("kvm01", GUEST, disk="shared", bridge=False, start=False)

    port = stack.start_web()
    stack.spawn("events", procfile_argv("events"))
    deadline = time.monotonic() + 120
    while not Domain.objects.filter(name=GUEST).exists():
        if time.monotonic() > deadline:
            raise RuntimeError("watch_hosts never read kvm01: " + stack.log("events")[-2000:])
        time.sleep(0.2)
    feed = Feed(port, session_cookie(user))

    early = {"start": 0, "destroy": 0, "migrate": 0}

    def timed(host, args, predicate):
        since = len(feed.messages)
        virsh(lab, host, *args)
        returned = time.monotonic()
        late = feed.wait(since, predicate) - returned
        early[args[0]] += late <= 0
        return max(0.0, late) * 1000

    results = {"start": [], "destroy": [], "migrate": []}
    here, there = "kvm01", "kvm02"
    for _ in range(rounds):
        results["start"].append(timed(here, ["start", GUEST], lambda d: d["name"] == GUEST and d["state"] == "running"))
        lab.wait_ticking(GUEST, timeout=60)
        results["migrate"].append(
            timed(
                here,
                ["migrate", "--live", "--persistent", "--undefinesource", GUEST, f"qemu+tcp://{there}/system"],
                lambda d, there=there: d["name"] == GUEST and d["host"] == there and d["state"] == "running",
            )
        )
        here, there = there, here
        results["destroy"].append(
            timed(here, ["destroy", GUEST], lambda d: d["name"] == GUEST and d["state"] == "shutoff")
        )
    for command, values in results.items():
        report(
            f"watch.virsh_{command}_to_socket_median_ms",
            median(values),
            f"{len(values)} x virsh {command} on a lab host, from virsh's return to the dashboard message; "
            f"{early[command]} of them there before virsh returned",
        )
        report(f"watch.virsh_{command}_to_socket_p95_ms", percentile(values, 95), "goal <= 1000")


def footprint(stack, directory, n_hosts):
    """(threads, RSS KiB) of a watch_hosts watching n_hosts test-driver hosts, once all are online."""
    from hosts.models import Host, HostStatus
    from tests.testdriver import write_host

    Host.objects.all().delete()
    for i in range(n_hosts):
        name = f"t{n_hosts:03d}-{i:03d}"
        Host.objects.create(name=name, uri=write_host(directory, name, count=5))
    proc = stack.spawn(f"events-{n_hosts}", procfile_argv("events"))
    deadline = time.monotonic() + 300
    while Host.objects.filter(status=HostStatus.ONLINE).count() < n_hosts:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("watch_hosts did not bring every host online: " + stack.log(f"events-{n_hosts}")[-2000:])
        time.sleep(0.2)
    time.sleep(2)  # let it settle: the connect pool idles, the first writes are done
    status = Path(f"/proc/{proc.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    threads = int(fields["Threads"])
    rss = int(fields["VmRSS"].split()[0])
    stack.kill(f"events-{n_hosts}")
    return threads, rss


def cost(stack, n_hosts):
    with tempfile.TemporaryDirectory(prefix="kvmweb-bench-watch-") as directory:
        base_threads, base_rss = footprint(stack, directory, 1)
        threads, rss = footprint(stack, directory, n_hosts)
    report("watch.threads_1_host", base_threads, "baseline, same run")
    report(f"watch.threads_{n_hosts}_hosts", threads, "test-driver hosts, 5 VMs each")
    report("watch.rss_mib_1_host", base_rss / 1024, "baseline, same run")
    report(f"watch.rss_mib_{n_hosts}_hosts", rss / 1024)
    report("watch.rss_kib_per_host", (rss - base_rss) / (n_hosts - 1), f"(RSS {n_hosts} - RSS 1) / {n_hosts - 1}")
    report("watch.threads_per_host", (threads - base_threads) / (n_hosts - 1))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.bench_watch", description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--keep-lab", action="store_true", help="leave the bench lab up")
    parser.add_argument("--only", choices=["cost", "latency"], help="run one of the two parts")
    args = parser.parse_args(argv)

    stack = Stack()
    try:
        stack.setup_django()
        if args.only != "latency":
            cost(stack, args.hosts)
        if args.only == "cost":
            return 0
        from tests.lab.conftest_plugin import lab_unavailable_reason

        reason = lab_unavailable_reason()
        if reason:
            print(f"watch.latency: skipped ({reason})", flush=True)
            return 0
        from tests.lab import Lab

        lab = Lab(name=LAB_NAME)
        lab.up()
        try:
            lab.remove_guest(GUEST)
            latency(lab, stack, args.rounds)
        finally:
            try:
                lab.remove_guest(GUEST)
            finally:
                if not args.keep_lab:
                    lab.down()
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
