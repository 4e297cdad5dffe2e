"""Trust in an SSH host key belongs to the row that confirmed it (issue 21, finding 1).

known_hosts is per host and port, the confirmation per row: a second row
naming kvm01's address was "unconfirmed" in the API, yet the watcher, every
check and every migration logged in to it with kvm01's confirmed key. Now two
rows may not name one host and port, and nothing connects through a row whose
own key is not confirmed. Proved without the lab: nothing here needs a host
that answers SSH (a listener that counts connections shows none are made).
"""

import base64
import socket
import threading
import time

import pytest

from hosts import sshkeys
from hosts.models import Host, write_known_hosts
from hosts.watch import Watcher
from tests.migration_helpers import migration_for, run, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _ed25519(seed: int) -> str:
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes([seed]) * 32
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


KEY = _ed25519(1)
OTHER_KEY = _ed25519(2)


class CountingListener:
    """A TCP port that accepts and never answers, counting the connections made to it."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def listener():
    listening = CountingListener()
    yield listening
    listening.close()


def trusted_host(name, port, key=KEY):
    return Host.objects.create(name=name, uri=f"qemu+ssh://root@127.0.0.1:{port}/system", ssh_host_key=key)


def test_a_second_row_for_the_same_host_and_port_is_refused_naming_the_first(api, operator):
    trusted_host("kvm01", 2222)
    api.force_authenticate(operator)
    for uri in (
        "qemu+ssh://root@127.0.0.1:2222/system",
        "qemu+ssh://admin@127.0.0.1:2222/system",  # another user: the same host key
        "qemu+libssh://root@127.0.0.1:2222/system",  # another transport over the same sshd
    ):
        response = api.post("/api/hosts/", {"name": "kvm01b", "uri": uri}, format="json")
        assert response.status_code == 400, uri
        message = response.json()["uri"][0]
        assert "Host 'kvm01' is already registered at 127.0.0.1 port 2222" in message
    assert not Host.objects.filter(name="kvm01b").exists()
    # Another port is another host.
    response = api.post("/api/hosts/", {"name": "kvm02", "uri": "qemu+tcp://127.0.0.1:1/system"}, format="json")
    assert response.status_code == 201


def test_the_admin_and_register_host_refuse_the_same_host_and_port(client, owner):
    from django.core.management import CommandError, call_command

    trusted_host("kvm01", 2222)
    client.force_login(owner)
    response = client.post(
        "/admin/hosts/host/add/",
        {"name": "kvm01b", "uri": "qemu+ssh://root@127.0.0.1:2222/system", "max_incoming": 2, "max_outgoing": 2},
    )
    assert response.status_code == 200
    assert "Host &#x27;kvm01&#x27; is already registered at 127.0.0.1 port 2222" in response.content.decode()
    with pytest.raises(CommandError, match="Host 'kvm01' is already registered at"):
        call_command("register_host", "kvm01b", "qemu+ssh://root@127.0.0.1:2222/system")
    assert list(Host.objects.values_list("name", flat=True)) == ["kvm01"]


def test_known_hosts_holds_only_keys_of_rows_in_the_trusted_state():
    trusted_host("kvm01", 2222)
    # A row whose host now offers another key (state "changed").
    changed = trusted_host("kvm02", 2223)
    changed.ssh_offered_key = OTHER_KEY
    changed.save()
    write_known_hosts()
    text = sshkeys.known_hosts_path().read_text()
    assert "[127.0.0.1]:2222 " in text
    assert "[127.0.0.1]:2223" not in text


@pytest.mark.slow  # waits on a host that never answers
def test_nothing_opens_a_row_whose_own_key_is_not_confirmed(testdriver_hosts, listener):
    """Such rows came from before the rule (or a database edited by hand)."""
    from hosts.libvirt import HostError

    kvm01, kvm02 = testdriver_hosts
    # Room for the guest, as kvm02 has: what stops the move is the key alone.
    unconfirmed = Host.objects.create(
        name="kvm03",
        uri=f"qemu+ssh://root@127.0.0.1:{listener.port}/system",
        memory_total=kvm02.memory_total,
        memory_free=kvm02.memory_free,
        cpu_count=kvm02.cpu_count,
    )
    with pytest.raises(HostError) as refused:
        unconfirmed.connect_uri()
    assert refused.value.code == "host_key_unconfirmed"

    # A migration to it fails before connecting, saying why.
    dom = kvm01.domains.get(name="kvm01-vm001")
    migration = run(migration_for(dom, unconfirmed).pk)
    assert migration.status == "failed"
    assert migration.error_code == "host_key_unconfirmed", (migration.error, migration.checks)
    assert "does not trust the SSH host key of kvm03" in migration.error
    # (The inventory refresh after it fetched the key the host offers, with
    # ssh-keyscan, for an operator to compare: that is no login.)


def test_the_watcher_never_connects_to_a_row_whose_key_is_not_confirmed(listener, testdriver_hosts):
    from django.db import connection

    Host.objects.create(name="kvm03", uri=f"qemu+ssh://root@127.0.0.1:{listener.port}/system")
    w = Watcher(timeout=1, rescan=0.2, min_backoff=0.2, max_backoff=0.5)

    def run_watcher():
        try:
            w.run()
        finally:
            connection.close()

    thread = threading.Thread(target=run_watcher, daemon=True)
    thread.start()
    try:
        # It watches the others (test driver)...
        wait_for(lambda: len(w.watches) == 2, 20, what="the watcher to watch the test-driver hosts")
        time.sleep(2)  # ...and in ten rescans never touches the unconfirmed one.
    finally:
        w.stop()
        thread.join(10)
    assert listener.accepted == 0
    assert Host.objects.get(name="kvm03").status != "online"
