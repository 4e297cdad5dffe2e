"""Issue 21, finding 1, on the lab's real sshd: a second row naming kvm01's
address is refused, and one that exists anyway (made before the rule) is never
logged in to, by the watcher or anything else.

Before: the second row was "unconfirmed" in the API, yet within 15 s the
watcher had logged in with kvm01's confirmed key, marked it online and moved
kvm01's VMs to it, with false "moved outside kvmweb" audit entries.
"""

import threading
import time

import pytest
from django.db import connection

from hosts.models import Host, HostStatus
from hosts.sync import sync_host
from hosts.watch import Watcher
from migrations_app.models import AuditEntry
from tests.test_ssh_and_tls_hosts import kvmweb_ssh, register  # noqa: F401  (kvmweb_ssh: a fixture)

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


def test_a_second_row_for_kvm01_is_refused_and_an_old_one_never_logged_in(lab, api, operator, kvmweb_ssh):  # noqa: F811
    kvm01 = register(api, operator, "kvm01", lab.ssh_uri("kvm01"), fingerprint=lab.ssh_fingerprint("kvm01"))
    assert kvm01.host_key_state == "trusted"
    assert Host.objects.get(pk=kvm01.pk).status == HostStatus.ONLINE
    kvm01_domains = set(kvm01.domains.values_list("uuid", flat=True))

    response = api.post("/api/hosts/", {"name": "kvm01-again", "uri": lab.ssh_uri("kvm01")}, format="json")
    assert response.status_code == 400
    assert f"Host 'kvm01' is already registered at {lab.address('kvm01')} port 22" in response.json()["uri"][0]

    # A row from before the rule, naming the same address and port.
    again = Host.objects.create(name="kvm01-again", uri=f"qemu+ssh://root@{lab.address('kvm01')}:22/system")
    assert not sync_host(again).online
    again.refresh_from_db()
    assert again.host_key_state == "unconfirmed"

    w = Watcher(timeout=3, rescan=0.5, min_backoff=0.5, max_backoff=1)

    def run():
        try:
            w.run()
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while kvm01.pk not in w.watches and time.monotonic() < deadline:
            time.sleep(0.2)
        assert kvm01.pk in w.watches, "the watcher watches kvm01"
        time.sleep(15)
        assert again.pk not in w.watches
    finally:
        w.stop()
        thread.join(10)
    again.refresh_from_db()
    assert again.status != HostStatus.ONLINE
    assert not again.domains.exists()
    assert set(Host.objects.get(pk=kvm01.pk).domains.values_list("uuid", flat=True)) == kvm01_domains
    assert not AuditEntry.objects.filter(action="inventory").exists()
