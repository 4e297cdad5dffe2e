import shutil
import socket
import subprocess
import tempfile
import time

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User

import importlib.util

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


def _user(username, group=None, **extra):
    user = User.objects.create_user(username, f"{username}@example.com", "pw-" + username, **extra)
    if group:
        user.groups.add(Group.objects.get(name=group))
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
