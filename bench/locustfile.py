"""Locust users for `make load` (bench/load.py starts kvmweb and runs this headless).

Three kinds of user, as kvmweb is used while migrations run:

- ``PageUser``: a logged-in viewer reading the pages (dashboard, hosts,
  domains, migrations, one migration, audit);
- ``ApiUser``: a script with a token reading the API;
- ``DashboardUser``: a browser tab holding the dashboard's WebSocket open; each
  migration message it receives is reported as ``ws /ws/dashboard/ lag``, its
  "response time" being how long after the worker published it it arrived.

bench/load.py passes what the users need in the environment: the session
cookie (KVMWEB_LOAD_SESSION), the API token (KVMWEB_LOAD_TOKEN), host names
and migration ids to read (KVMWEB_LOAD_HOSTS, KVMWEB_LOAD_MIGRATIONS).
Only loopback targets: kvmweb started for the run.
"""

import ipaddress
import json
import os
import random
import time
from urllib.parse import urlparse

import websocket
from locust import HttpUser, User, between, events, task

SESSION = os.environ.get("KVMWEB_LOAD_SESSION", "")
TOKEN = os.environ.get("KVMWEB_LOAD_TOKEN", "")
HOSTS = [h for h in os.environ.get("KVMWEB_LOAD_HOSTS", "").split(",") if h]
MIGRATIONS = [m for m in os.environ.get("KVMWEB_LOAD_MIGRATIONS", "").split(",") if m]


@events.test_start.add_listener
def only_loopback(environment, **kwargs):
    host = urlparse(environment.host or "").hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"bench/locustfile.py loads only a kvmweb on loopback, not {host!r}")


class PageUser(HttpUser):
    weight = 5
    wait_time = between(1, 3)

    def on_start(self):
        self.client.cookies.set("sessionid", SESSION)

    def get(self, path, name=None):
        with self.client.get(path, name=name or path, allow_redirects=False, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")

    @task(4)
    def dashboard(self):
        self.get("/")

    @task(2)
    def domains(self):
        self.get("/domains/")

    @task(2)
    def migrations(self):
        self.get("/migrations/")

    @task(1)
    def host(self):
        if HOSTS:
            self.get(f"/hosts/{random.choice(HOSTS)}/", name="/hosts/[name]/")

    @task(1)
    def migration(self):
        if MIGRATIONS:
            self.get(f"/migrations/{random.choice(MIGRATIONS)}/", name="/migrations/[id]/")

    @task(1)
    def audit(self):
        self.get("/audit/")


class ApiUser(HttpUser):
    weight = 3
    wait_time = between(1, 3)

    def on_start(self):
        self.client.headers["Authorization"] = f"Token {TOKEN}"

    def get(self, path, name=None):
        with self.client.get(path, name=name or path, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")

    @task(2)
    def hosts(self):
        self.get("/api/hosts/")

    @task(3)
    def domains(self):
        self.get("/api/domains/?limit=50")

    @task(3)
    def migrations(self):
        self.get("/api/migrations/?limit=20")

    @task(2)
    def migration(self):
        if MIGRATIONS:
            self.get(f"/api/migrations/{random.choice(MIGRATIONS)}/", name="/api/migrations/[id]/")


class DashboardUser(User):
    """Holds /ws/dashboard/ open and reports each migration message's lag."""

    weight = 2
    wait_time = between(0, 0)

    def on_start(self):
        self.ws = None

    def connect(self):
        url = urlparse(self.host)
        started = time.perf_counter()
        try:
            self.ws = websocket.create_connection(
                f"ws://{url.netloc}/ws/dashboard/",
                cookie=f"sessionid={SESSION}",
                origin=f"{url.scheme}://{url.netloc}",
                timeout=10,
            )
            first = json.loads(self.ws.recv())
            assert first["type"] == "dashboard.state", first["type"]
        except Exception as e:  # noqa: BLE001 - reported to locust as a failure
            self.ws = None
            self.fire("connect", started, exception=e)
            time.sleep(1)
            return
        self.fire("connect", started)

    def fire(self, what, started, exception=None, response_time=None):
        events.request.fire(
            request_type="ws",
            name=f"/ws/dashboard/ {what}",
            response_time=response_time if response_time is not None else (time.perf_counter() - started) * 1000,
            response_length=0,
            exception=exception,
            context={},
        )

    @task
    def listen(self):
        if self.ws is None:
            self.connect()
            return
        try:
            raw = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            return  # quiet for 10 s: nothing ran; keep listening
        except Exception as e:  # noqa: BLE001
            self.fire("receive", time.perf_counter(), exception=e)
            self.ws = None
            return
        message = json.loads(raw)
        sent_at = (message.get("migration") or {}).get("sent_at")
        if message.get("type") == "dashboard.migration" and sent_at:
            self.fire("lag", 0, response_time=max(0.0, (time.time() - sent_at) * 1000))

    def on_stop(self):
        if self.ws is not None:
            self.ws.close()
