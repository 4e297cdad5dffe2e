"""Hosts that accept a connection and never answer cost a bounded amount (issue 21, finding 7).

Ten such hosts took the watcher from 9 to 19 threads and from 5 to 15 ssh
processes, still there after 28 minutes: kvmweb's ssh had no connect timeout,
and the watcher tried every host again every 30 s, for ever.
"""

import subprocess
import threading
import time

import pytest
from django.db import connection

from hosts import sshkeys
from hosts.models import Host, HostStatus
from hosts.watch import Watcher
from tests.test_host_key_per_row import CountingListener


@pytest.fixture
def listener():
    listening = CountingListener()
    yield listening
    listening.close()


def test_kvmweb_s_ssh_gives_up_on_a_host_that_never_answers(settings, tmp_path, listener):
    settings.VAR_DIR = tmp_path
    settings.KVMWEB_CONNECT_TIMEOUT = 2
    started = time.monotonic()
    done = subprocess.run(
        [str(sshkeys.ssh_command()), "-p", str(listener.port), "root@127.0.0.1", "true"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    took = time.monotonic() - started
    assert done.returncode != 0
    assert took < 10, f"ssh waited {took:.1f} s"
    assert listener.accepted == 1
    config = (sshkeys.ssh_dir() / "ssh_config").read_text()
    assert "ConnectTimeout 2\n" in config
    assert "ServerAliveInterval 5\n" in config


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow  # waits on a host that never answers
def test_the_watcher_tries_a_silent_host_a_bounded_number_of_times(listener):
    host = Host.objects.create(name="silent", uri=f"qemu+tcp://127.0.0.1:{listener.port}/system")
    w = Watcher(timeout=0.3, rescan=0.2, min_backoff=0.05, max_backoff=0.1, max_attempts=3, idle_backoff=600)

    def run():
        try:
            w.run()
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        time.sleep(6)
        tried = listener.accepted
        assert w.failures.get(host.pk) == 3
        # Each try: the reachability probe, and the first one's open (abandoned, not repeated).
        assert 3 <= tried <= 6, tried
        # The worker's periodic sync finds it online: the watcher tries again at once.
        Host.objects.filter(pk=host.pk).update(status=HostStatus.ONLINE)
        deadline = time.monotonic() + 5
        while listener.accepted == tried and time.monotonic() < deadline:
            time.sleep(0.1)
        assert listener.accepted > tried
    finally:
        w.stop()
        thread.join(10)
