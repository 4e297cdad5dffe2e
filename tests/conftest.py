import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

# Static files from the source tree, never from an old collectstatic copy, in
# the servers tests start (they inherit this environment; this process is set
# in _use_test_redis, its settings being read before this file).
os.environ.setdefault("KVMWEB_STATIC_FROM_SOURCE", "true")

import pytest  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth.models import Group, User  # noqa: E402
from django.db import connections  # noqa: E402

from kvmweb import settings as kvmweb_settings  # noqa: E402
from tests.localservers import PrivateRedis  # noqa: E402

if importlib.util.find_spec("tests.lab.conftest_plugin"):
    pytest_plugins = ["tests.lab.conftest_plugin"]


# Programs that make a test slow and that `make test-fast` promises not to
# start: servers, workers, and Python itself (a Django start-up costs a second
# or more). Short helpers kvmweb runs itself (ssh-keyscan, ssh-keygen) are not
# among them.
SERVERS = {"daphne", "rqworker", "supervisord", "supervisorctl", "redis-server", "postgres", "pg_ctl", "initdb"}
_starting_processes_allowed = True


def _starts_a_server_or_python(argv) -> bool:
    program = os.path.basename(str(argv if isinstance(argv, (str, bytes)) else argv[0]).split()[0])
    return program in SERVERS or program.startswith("python") or program == os.path.basename(sys.executable)


def _refuse_unmarked_processes(event, args):
    if event == "subprocess.Popen" and not _starting_processes_allowed and _starts_a_server_or_python(args[1]):
        raise RuntimeError(
            f"this test starts {args[1]!r}: mark it @pytest.mark.processes, which `make test-fast` leaves out"
        )


def pytest_configure(config):
    # An audit hook stays for the life of the interpreter: installed once, it
    # only looks at the flag the fixture below sets for each test.
    sys.addaudithook(_refuse_unmarked_processes)


@pytest.fixture(autouse=True)
def _processes_only_where_marked(request):
    """A test that starts a server or Python without the `processes` marker
    (or `lab`, `browser`) fails, saying so: the marker stays true."""
    global _starting_processes_allowed
    marked = any(request.node.get_closest_marker(m) for m in ("processes", "lab", "browser"))
    _starting_processes_allowed = marked
    yield
    _starting_processes_allowed = True


@pytest.fixture(scope="session")
def redis_url():
    """A real redis-server of the test session's own, so tests never touch the demo's."""
    workdir = tempfile.mkdtemp(prefix="kvmweb-redis-")
    try:
        redis = PrivateRedis(workdir)
    except RuntimeError as e:
        pytest.fail(str(e))
    yield redis.url
    redis.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def _use_test_redis(redis_url):
    # Settings are read when queues and channel layers are created, so the
    # test session's Redis is in place before any of them exist.
    settings.REDIS_URL = redis_url
    settings.RQ_QUEUES = {name: {**conf, "URL": redis_url} for name, conf in settings.RQ_QUEUES.items()}
    settings.CHANNEL_LAYERS = kvmweb_settings.channel_layers(redis_url)
    # Throttle counts in this process's memory, emptied before each test
    # (_fresh_throttles), so one test's requests never count against the next.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.KVMWEB_SYNC_INTERVAL = 0
    settings.WHITENOISE_USE_FINDERS = True
    settings.MIDDLEWARE = [
        "tests.static_files.WhiteNoiseReadOnce" if m == "whitenoise.middleware.WhiteNoiseMiddleware" else m
        for m in settings.MIDDLEWARE
    ]
    # Hashing test users' passwords properly costs a third of a second each.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # A connection per request in this process, as before kvmweb kept them:
    # one kept by a thread of the HTTP pool or the consumers' thread would stop
    # the test database from being dropped at the end (PostgreSQL). The servers
    # tests start keep theirs, and end with their process.
    connections["default"].settings_dict["CONN_MAX_AGE"] = 0


@pytest.fixture(autouse=True)
def _quick_failed_registrations(monkeypatch):
    """A failed registration or sync asked for by a person answers after a
    fixed time (hosts.sync.sync_host_evenly: 11 s by default); none here, but
    in the test of that time (it sets it back)."""
    from hosts import sync

    monkeypatch.setattr(sync, "EVEN_FAILURE_SECONDS", 0)


@pytest.fixture(autouse=True)
def _fresh_throttles():
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    """A channel layer of each test's own, as each web process has its own.

    The tests run consumers in a new event loop each (async_to_sync), and a
    channels-redis layer keeps its receiving state (a count and a lock) across
    loops: a consumer that one test left inside receive() made the next
    tests' sockets fail with "Lock ... is bound to a different event loop"."""
    from channels.layers import channel_layers

    channel_layers.backends.pop("default", None)
    yield
    channel_layers.backends.pop("default", None)


@pytest.fixture(autouse=True, scope="session")
def _test_connections(tmp_path_factory):
    """What the suite may connect with: libvirt's test driver (files below the
    session's temporary directory, where the tests write them) and, for the
    lab's older tests, plain qemu+tcp. The allowlist tests turn both off where
    they prove a refusal. Also in the environment, for the worker processes."""
    import os

    values = {
        "KVMWEB_ALLOW_TEST_DRIVER": "true",
        "KVMWEB_ALLOW_TCP": "true",
        "KVMWEB_TEST_DRIVER_DIR": str(tmp_path_factory.getbasetemp()),
    }
    os.environ.update(values)
    settings.KVMWEB_ALLOW_TEST_DRIVER = True
    settings.KVMWEB_ALLOW_TCP = True
    settings.KVMWEB_TEST_DRIVER_DIR = values["KVMWEB_TEST_DRIVER_DIR"]


def _user(username, group=None, **extra):
    user = User.objects.create_user(username, f"{username}@example.com", "pw-" + username, **extra)
    if group:
        # get_or_create: transactional tests flush the groups the data migration made.
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


@pytest.fixture
def owner(db):
    return _user("alice", is_superuser=True, is_staff=True)


@pytest.fixture
def operator(db):
    return _user("oscar", "operators")


@pytest.fixture
def viewer(db):
    return _user("vera", "viewers")


@pytest.fixture
def outsider(db):
    return _user("otto")


@pytest.fixture
def api(client):
    """A DRF client; log a user in with api.force_authenticate(user)."""
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def testdriver_hosts(tmp_path, db):
    """kvm01 (two VMs, kvm01-vm001 running) and kvm02, on libvirt's test driver, synced."""
    from hosts.models import Host
    from hosts.sync import sync_host
    from tests.testdriver import write_host

    kvm01 = Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01", count=2))
    kvm02 = Host.objects.create(name="kvm02", uri=write_host(tmp_path, "kvm02"))
    assert sync_host(kvm01).online and sync_host(kvm02).online
    return kvm01, kvm02


def database_url_for_subprocess():
    """The URL another process uses to reach the test database."""
    from django.db import connection

    conf = connection.settings_dict
    if conf["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{conf['NAME']}"
    user = conf.get("USER") or ""
    password = f":{conf['PASSWORD']}" if conf.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    port = f":{conf['PORT']}" if conf.get("PORT") else ""
    return f"postgres://{auth}{conf.get('HOST') or 'localhost'}{port}/{conf['NAME']}"


class WorkerProcess:
    """A real worker in its own process group, as in production: `manage.py
    rqworker` on ``queues``, or with ``pool=True`` the Procfile's worker line
    (the pool of migration and short-job slots, kvmweb/workerpool.py)."""

    def __init__(self, redis_url, queues=("migrations",), pool=False, **env):
        import os
        import sys
        from pathlib import Path

        from kvmweb.procfile import procfile_argv

        root = Path(__file__).resolve().parent.parent
        env = {
            **os.environ,
            "DATABASE_URL": database_url_for_subprocess(),
            "REDIS_URL": redis_url,
            "KVMWEB_SYNC_INTERVAL": "0",
            **{k: str(v) for k, v in env.items()},
        }
        self.pool = pool
        argv = (
            procfile_argv("worker") if pool else [sys.executable, "manage.py", "rqworker", "--with-scheduler", *queues]
        )
        self.log = tempfile.NamedTemporaryFile(prefix="kvmweb-worker-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            argv,
            cwd=root,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def kill(self, sig=None):
        import os
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig or signal.SIGKILL)
            self.proc.wait(timeout=10)
        if sig in (None, signal.SIGKILL):
            # The pool's slots die with it (their parent-death signal), but
            # only after a moment: wait, so none outlives the test.
            import time

            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)

    def output(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()


def _alive(pid):

    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _forget_dead_workers(redis_url):
    """Take the records of workers an earlier test killed out of RQ's registry:
    alive for RQ until their keys expire, they would count as free workers
    (migrations_app/waiting.py) in the next test. All run on this machine."""
    from redis import Redis
    from rq import Worker

    connection = Redis.from_url(redis_url)
    for worker in Worker.all(connection=connection):
        if worker.pid and not _alive(worker.pid):
            worker.register_death()


@pytest.fixture
def worker_process(redis_url):
    workers = []

    def start(queues=("migrations",), pool=False, **env):
        _forget_dead_workers(redis_url)
        w = WorkerProcess(redis_url, queues, pool=pool, **env)
        workers.append(w)
        return w

    yield start
    import os
    import signal

    for w in workers:
        if w.proc.poll() is None:
            # As a supervisor stops it, so that its slots leave RQ's registry
            # (a killed slot's record lingers and would count as a worker in
            # the next test); killed if a slot is still busy after a while.
            w.proc.send_signal(signal.SIGTERM)
            try:
                w.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        w.kill()
        os.unlink(w.log.name)
