"""The demo's processes run under supervisord and come back when they die
(finding 5), and the demo's Redis obeys only who has its password (finding 1).

The supervisor's configuration and the Redis set-up are the ones `make demo`
writes (kvmweb.supervisor, from the Procfile); the programs find the Redis
URL where the demo keeps it (var/redis-url) and use the test database.
"""

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from urllib.parse import urlsplit

import pytest
import redis
from rq import Worker

from kvmweb import supervisor
from tests.conftest import database_url_for_subprocess
from tests.localservers import free_port, wait_port


def ctl(conf, *args):
    return subprocess.run(["supervisorctl", "-c", str(conf), *args], capture_output=True, text=True, timeout=30)


def running_pid(conf, name, timeout=60, not_pid=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = ctl(conf, "status", name).stdout
        if "RUNNING" in out:
            pid = int(out.split("pid", 1)[1].split(",", 1)[0])
            if pid != not_pid:
                return pid
        time.sleep(0.3)
    raise AssertionError(f"{name} is not running again: {ctl(conf, 'status').stdout}")


@pytest.fixture
def supervised(transactional_db, tmp_path, request):
    webs = getattr(request, "param", 1)
    if shutil.which("supervisord") is None:
        pytest.fail("supervisord is not installed: `make demo` or `make test` installs it (Debian's supervisor).")
    var = tmp_path / "var"
    var.mkdir(mode=0o700)
    port = free_port()
    redis_url = supervisor.redis_setup(var, port=free_port())
    conf = supervisor.write(var, bind="127.0.0.1", port=port, with_redis=True, webs=webs)
    env = {
        **{k: v for k, v in os.environ.items() if k != "REDIS_URL"},
        "KVMWEB_VAR_DIR": str(var),
        "DATABASE_URL": database_url_for_subprocess(),
        "KVMWEB_SYNC_INTERVAL": "0",
        "KVMWEB_LOG_LEVEL": "WARNING",
    }
    # As scripts/demo.sh starts it: under umask 077.
    subprocess.run(
        ["supervisord", "-c", str(conf)], env=env, check=True, timeout=30, preexec_fn=lambda: os.umask(0o077)
    )
    try:
        yield conf, port, var, redis_url
    finally:
        ctl(conf, "stop", "all")
        ctl(conf, "shutdown")
        pid_file = var / "supervisord.pid"
        deadline = time.monotonic() + 30
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)


def test_every_procfile_line_is_a_supervised_program():
    conf = supervisor.render("/nonexistent", port=8123)
    for name in supervisor.procfile():
        assert f"[program:{name}]" in conf
    assert "autorestart=true" in conf and "umask=077" in conf and "chmod=0700" in conf
    assert "-p 8123" in conf


@pytest.mark.processes
def test_the_demos_redis_requires_its_password(supervised):
    conf, port, var, url = supervised
    running_pid(conf, "redis")
    parts = urlsplit(url)
    anonymous = redis.Redis(host="127.0.0.1", port=parts.port, socket_connect_timeout=5)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.lpush("rq:queue:default", "evil")
    assert redis.Redis.from_url(url).ping()
    # The worker found the URL (and password) in var/redis-url, as the demo's processes do.
    running_pid(conf, "worker")
    deadline = time.monotonic() + 60
    while not Worker.all(connection=redis.Redis.from_url(url)) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert Worker.all(connection=redis.Redis.from_url(url))
    assert url not in (var / "supervisord.conf").read_text()


@pytest.mark.processes
def test_a_killed_worker_web_server_and_redis_come_back(supervised):
    conf, port, var, url = supervised
    wait_port(port, what="daphne under supervisord", timeout=60)
    store = running_pid(conf, "redis")
    os.kill(store, signal.SIGKILL)
    running_pid(conf, "redis", not_pid=store)
    worker = running_pid(conf, "worker")
    os.kill(worker, signal.SIGKILL)
    again = running_pid(conf, "worker", not_pid=worker)
    assert again != worker

    web = running_pid(conf, "web")
    os.kill(web, signal.SIGKILL)
    running_pid(conf, "web", not_pid=web)
    wait_port(port, what="daphne restarted by supervisord", timeout=60)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=10) as response:
        assert response.status == 200
    # What supervisord writes is private too.
    for path in var.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path.name


def listening_socket(port):
    """The inode of the socket listening on 127.0.0.1:port."""
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
            return fields[9]
    raise AssertionError(f"nothing listens on port {port}")


def holds(pid, inode):
    fds = f"/proc/{pid}/fd"
    return any(os.readlink(f"{fds}/{fd}") == f"socket:[{inode}]" for fd in os.listdir(fds))


@pytest.mark.processes
@pytest.mark.parametrize("supervised", [2], indirect=True)
def test_several_daphnes_serve_one_address_and_one_dying_leaves_it_served(supervised):
    conf, port, var, url = supervised
    first, second = (running_pid(conf, f"web:web_{i}") for i in range(2))
    wait_port(port, what="daphnes under supervisord", timeout=60)
    # supervisord bound the address once; both daphnes accept on that socket.
    inode = listening_socket(port)
    assert first != second and holds(first, inode) and holds(second, inode)
    os.kill(first, signal.SIGKILL)
    # The other one answers meanwhile; supervisord starts the killed one again.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=10) as response:
        assert response.status == 200
    again = running_pid(conf, "web:web_0", not_pid=first)
    assert holds(again, listening_socket(port))
