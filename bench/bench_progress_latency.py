"""How late does a browser see a migration's progress, and how fast is its page?

    DJANGO_SETTINGS_MODULE=kvmweb.settings python -m bench.bench_progress_latency [--samples 200]

Runs a stack of its own: a redis-server (unless --redis-url is given), a SQLite
file in a temporary directory, and daphne serving kvmweb.asgi on a free port.
A logged-in WebSocket client (a real socket to daphne, a minimal RFC 6455
client below, since no WebSocket client library is a dependency) watches one
migration while this process publishes progress samples the way the engine
does: ``save_progress()``, which saves and publishes, every --interval
seconds (the engine samples about twice a second). Latency is the time from
the publish stamp (``sent_at``) and from the sample stamp (``sampled_at``) to
the moment the client has the message. Then, if Playwright and Chromium are
there, the migration page's server time and first paint in a real browser.

Prints ``name: value`` lines. Goal: progress_latency_p95_ms <= 500, page first
paint < 1000 ms.
"""

import argparse
import asyncio
import base64
import json
import os
import statistics
import struct
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from bench.stack import Stack, session_cookie

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("KVMWEB_CHROMIUM", "/usr/bin/chromium")


def percentile(values, p):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# -- a minimal WebSocket client (RFC 6455: handshake, masked text out, frames in) --


class WebSocket:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, host, port, path, headers):
        reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *[f"{k}: {v}" for k, v in headers.items()],
            "",
            "",
        ]
        writer.write("\r\n".join(lines).encode())
        await writer.drain()
        status = await reader.readline()
        if b" 101 " not in status:
            raise SystemExit(f"WebSocket refused: {status.decode().strip()}")
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        return cls(reader, writer)

    async def recv(self):
        """The next text message (control frames answered or skipped)."""
        message = b""
        while True:
            head = await self.reader.readexactly(2)
            fin, opcode = head[0] & 0x80, head[0] & 0x0F
            length = head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            payload = await self.reader.readexactly(length)  # the server does not mask
            if opcode == 8:
                raise ConnectionError("closed by the server")
            if opcode == 9:
                self._send(10, payload)
                continue
            if opcode in (0, 1, 2):
                message += payload
                if fin:
                    return message.decode()

    def _send(self, opcode, payload):
        mask = os.urandom(4)
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        self.writer.write(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def close(self):
        try:
            self._send(8, struct.pack("!H", 1000))
        finally:
            self.writer.close()


def prepare():
    """A database with a viewer and one running migration; returns (migration, session id)."""
    from django.contrib.auth.models import Group, User

    from hosts.models import Domain, Host
    from migrations_app.models import Migration

    user = User.objects.create_user("bench", password="bench-password-1")
    user.groups.add(Group.objects.get(name="viewers"))
    source = Host.objects.create(name="kvm01", uri="test:///default", status="online")
    target = Host.objects.create(name="kvm02", uri="test:///kvm02", status="online")
    domain = Domain.objects.create(uuid=uuid.uuid4(), name="bench-vm", host=source, state="running", memory=384 * 2**20)
    migration = Migration.objects.create(
        domain=domain,
        domain_name=domain.name,
        domain_uuid=domain.uuid,
        source=source,
        source_name=source.name,
        target=target,
        target_name=target.name,
        mode="live",
        status="running",
        phase="transferring_memory",
        bandwidth_mib=8,
        checks=[{"name": f"check_{i}", "result": "pass", "message": "Fine.", "detail": ""} for i in range(11)],
    )
    return migration, session_cookie(user)


def sample(n, total=384 * 2**20, speed=8 * 2**20):
    done = min(total, n * speed // 2)
    return {
        "percent": round(100 * done / total, 1),
        "data_total": total,
        "data_processed": done,
        "data_remaining": total - done,
        "memory_total": total,
        "memory_processed": done,
        "memory_remaining": total - done,
        "disk_total": 0,
        "disk_processed": 0,
        "disk_remaining": 0,
        "speed_bps": speed,
        "dirty_rate_bps": 2**20,
        "iteration": 1 + n // 100,
        "downtime_ms": 300,
        "eta_seconds": (total - done) / speed,
        "convergence": "converging",
        "elapsed": n / 2,
        "sampled_at": time.time(),
    }


def publisher(migration, samples, interval, started):
    from django.db import close_old_connections

    started.wait()
    for n in range(samples):
        migration.save_progress(sample(n))  # saves and publishes, as the engine does
        time.sleep(interval)
    close_old_connections()


async def measure_latency(port, migration, session, samples, interval):
    ws = await WebSocket.connect(
        "127.0.0.1",
        port,
        f"/ws/migrations/{migration.pk}/",
        {"Origin": f"http://127.0.0.1:{port}", "Cookie": f"sessionid={session}"},
    )
    first = json.loads(await ws.recv())
    assert first["type"] == "migration.state", first
    started = threading.Event()
    # The publisher is a plain thread, like the engine in its worker: no event loop there.
    thread = threading.Thread(target=publisher, daemon=True, args=(migration, samples, interval, started))
    thread.start()
    started.set()
    from_publish, from_sample, received = [], [], 0
    deadline = time.monotonic() + samples * interval + 10
    while received < samples and time.monotonic() < deadline:
        try:
            raw = await asyncio.wait_for(ws.recv(), timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            break
        now = time.time()
        state = json.loads(raw)["migration"]
        received += 1
        from_publish.append((now - state["sent_at"]) * 1000)
        from_sample.append((now - state["progress"]["sampled_at"]) * 1000)
    ws.close()
    thread.join(timeout=10)
    return from_publish, from_sample, received


def page_timings(port, migration_id, session, loads):
    """Server time (HTTP, no browser) and, with Playwright, the browser's view."""
    url = f"http://127.0.0.1:{port}/migrations/{migration_id}/"
    server = []
    for _ in range(loads):
        request = urllib.request.Request(url, headers={"Cookie": f"sessionid={session}"})
        t0 = time.perf_counter()
        with urllib.request.urlopen(request) as response:
            response.read()
            assert response.status == 200
        server.append((time.perf_counter() - t0) * 1000)
    results = {"page_server_time_median_ms": statistics.median(server), "page_server_time_max_ms": max(server)}
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        results["page_first_paint"] = "skipped (playwright is not installed)"
        return results
    if not os.path.exists(CHROMIUM):
        results["page_first_paint"] = f"skipped (no Chromium at {CHROMIUM})"
        return results
    ttfb, fcp, loaded, ws_open = [], [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = browser.new_context()
        context.add_cookies([{"name": "sessionid", "value": session, "domain": "127.0.0.1", "path": "/"}])
        page = context.new_page()
        for _ in range(loads):
            page.goto(url, wait_until="load")
            page.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0")
            nav = page.evaluate("""() => { const n = performance.getEntriesByType('navigation')[0];
                return {ttfb: n.responseStart - n.requestStart, load: n.loadEventEnd - n.startTime,
                        fcp: performance.getEntriesByName('first-contentful-paint')[0].startTime}; }""")
            ttfb.append(nav["ttfb"])
            fcp.append(nav["fcp"])
            loaded.append(nav["load"])
            # Until the socket is open (the "live" mark shows; includes Playwright's polling).
            page.wait_for_selector("[data-bind=live]:not([hidden])", timeout=10_000)
            ws_open.append(page.evaluate("performance.now()"))
        browser.close()
    results.update(
        {
            "page_browser_ttfb_median_ms": statistics.median(ttfb),
            "page_first_contentful_paint_median_ms": statistics.median(fcp),
            "page_first_contentful_paint_max_ms": max(fcp),
            "page_load_event_median_ms": statistics.median(loaded),
            "page_socket_open_median_ms": statistics.median(ws_open),
        }
    )
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples (the engine: about 0.5)")
    parser.add_argument("--loads", type=int, default=10, help="page loads to time")
    parser.add_argument(
        "--redis-url", default=None, help="use this Redis instead of starting one (its groups see fake progress)"
    )
    args = parser.parse_args()
    if args.interval < 0.2:
        print("note: below 0.2 s the consumer coalesces samples, so latency includes that wait")

    stack = Stack(args.redis_url)
    try:
        stack.setup_django()
        migration, session = prepare()
        port = stack.start_web()
        from_publish, from_sample, received = asyncio.run(
            measure_latency(port, migration, session, args.samples, args.interval)
        )
        print(f"progress_samples_published: {args.samples}")
        print(f"progress_samples_received: {received}")
        print(f"progress_latency_median_ms: {statistics.median(from_publish):.1f}")
        print(f"progress_latency_p95_ms: {percentile(from_publish, 95):.1f}")
        print(f"progress_latency_max_ms: {max(from_publish):.1f}")
        print(f"progress_latency_from_sample_median_ms: {statistics.median(from_sample):.1f}")
        print(f"progress_latency_from_sample_p95_ms: {percentile(from_sample, 95):.1f}")
        print(f"progress_latency_goal_met: {percentile(from_publish, 95) <= 500}")
        for name, value in page_timings(port, migration.pk, session, args.loads).items():
            print(f"{name}: {value:.1f}" if isinstance(value, (int, float)) else f"{name}: {value}")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
