"""watch_hosts against libvirt's test driver: events become rows without a sync;
a host that does not answer is offline and tried again."""

import threading
import time

import libvirt
import pytest
from django.db import connection

from hosts.models import Domain, Host, HostStatus
from hosts.watch import Watcher
from tests.migration_helpers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def watcher():
    """A Watcher running in a thread, as watch_hosts runs it."""
    w = Watcher(timeout=2, rescan=0.2, min_backoff=0.2, max_backoff=0.5)

    def run():
        try:
            w.run()
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield w
    w.stop()
    thread.join(10)


@pytest.fixture
def default_driver():
    """libvirt's test:///default, whose state every connection of this process shares."""
    conn = libvirt.open("test:///default")
    dom = conn.lookupByName("test")
    yield dom
    if not dom.isActive():
        dom.create()
    conn.close()


def test_a_vm_stopped_and_started_reaches_the_inventory_without_a_sync(watcher, default_driver):
    host = Host.objects.create(name="kvm01", uri="test:///default")
    wait_for(lambda: Domain.objects.filter(name="test", state="running").exists(), 10, what="the first read")
    last_sync = Host.objects.get(pk=host.pk).last_sync

    default_driver.destroy()
    wait_for(lambda: Domain.objects.filter(name="test", state="shutoff").exists(), 5, what="the stop")
    default_driver.create()
    wait_for(lambda: Domain.objects.filter(name="test", state="running").exists(), 5, what="the start")

    # Only the watch's first read was a full one.
    assert Host.objects.get(pk=host.pk).last_sync == last_sync


def test_a_defined_and_undefined_vm_comes_and_goes(watcher, default_driver, tmp_path):
    from tests.testdriver import domain_xml

    Host.objects.create(name="kvm01", uri="test:///default")
    wait_for(lambda: Domain.objects.filter(name="test").exists(), 10, what="the first read")
    conn = libvirt.open("test:///default")
    try:
        xml = domain_xml("web01", "0b7b0c54-7a6c-4ae4-9a2e-3c1cde1c4c01", "shutoff")
        dom = conn.defineXML(xml.replace("<test:runstate", "<!--").replace("</test:runstate>", "-->"))
        wait_for(lambda: Domain.objects.filter(name="web01", state="shutoff").exists(), 5, what="the definition")
        dom.undefine()
        wait_for(lambda: not Domain.objects.filter(name="web01").exists(), 5, what="the undefinition")
    finally:
        conn.close()


@pytest.mark.slow
def test_a_host_that_does_not_answer_is_offline_and_tried_again(watcher):
    host = Host.objects.create(name="kvm09", uri="qemu+tcp://127.0.0.1:1/system")
    wait_for(lambda: Host.objects.get(pk=host.pk).status == HostStatus.OFFLINE, 10, what="offline")
    first = Host.objects.get(pk=host.pk).last_sync
    time.sleep(1.5)
    # Backoff of 0.2 s doubling to 0.5 s: tried again, not once only, and not in a busy loop.
    assert Host.objects.get(pk=host.pk).last_sync > first
