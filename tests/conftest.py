import importlib.util
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User

if importlib.util.find_spec("tests.lab.conftest_plugin"):
    pytest_plugins = ["tests.lab.conftest_plugin"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url():
    """A real redis-server of the test session's own, so tests never touch the demo's."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `make test`, which installs it.")
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="kvmweb-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("redis-server did not start within 10 s")
            time.sleep(0.05)
    url = f"redis://127.0.0.1:{port}/0"
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def _use_test_redis(redis_url):
    # Settings are read when queues and channel layers are created, so the
    # test session's Redis is in place before any of them exist.
    settings.REDIS_URL = redis_url
    settings.RQ_QUEUES = {
        name: {**conf, "URL": redis_url} for name, conf in settings.RQ_QUEUES.items()
    }
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url]},
        }
    }
    settings.KVMWEB_SYNC_INTERVAL = 0
    # Hashing test users' passwords properly costs a third of a second each.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


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
def test_hosts_dir(tmp_path):
    return tmp_path


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
    """A real `manage.py rqworker` in its own process group, as in production."""

    def __init__(self, redis_url, queues=("migrations",)):
        import os
        import sys
        from pathlib import Path

        root = Path(__file__).resolve().parent.parent
        env = {
            **os.environ,
            "DATABASE_URL": database_url_for_subprocess(),
            "REDIS_URL": redis_url,
            "KVMWEB_SYNC_INTERVAL": "0",
        }
        self.log = tempfile.NamedTemporaryFile(prefix="kvmweb-worker-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "rqworker", "--with-scheduler", *queues],
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

    def output(self):
        with open(self.log.name) as f:
            return f.read()


@pytest.fixture
def worker_process(redis_url):
    workers = []

    def start(queues=("migrations",)):
        w = WorkerProcess(redis_url, queues)
        workers.append(w)
        return w

    yield start
    import os

    for w in workers:
        w.kill()
        os.unlink(w.log.name)
