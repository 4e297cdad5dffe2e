"""A sync that read a host before watch_hosts stored an event, and wrote after
it, leaves the event's newer word in place; of two syncs at once, the later
read stands (libvirt's test driver, a real Watcher thread)."""

import libvirt
import pytest

from hosts.models import Domain, DomainDefinition, Host
from hosts.sync import read_host, store, sync_host
from tests.migration_helpers import wait_for
from tests.test_watch_hosts import default_driver, watcher  # noqa: F401  (fixtures)
from tests.testdriver import domain_xml

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def host(watcher):  # noqa: F811
    host = Host.objects.create(name="kvm01", uri="test:///default")
    wait_for(lambda: Domain.objects.filter(name="test", state="running").exists(), 10, what="the first read")
    return host


def test_a_sync_read_before_a_stop_does_not_show_the_vm_running_again(host, default_driver):  # noqa: F811
    stale = read_host(host)  # the sync reads: "running"…
    default_driver.destroy()  # …virsh destroy…
    wait_for(lambda: Domain.objects.filter(name="test", state="shutoff").exists(), 5, what="the stop event")

    store(host, stale)  # …and the sync writes what it read before the event.

    assert Domain.objects.get(name="test").state == "shutoff"
    assert DomainDefinition.objects.get(domain__name="test", host=host).state == "shutoff"
    # A read that began after the event is stored as usual.
    assert sync_host(host).online
    assert Domain.objects.get(name="test").state == "shutoff"


def test_a_sync_read_before_a_vm_was_defined_does_not_remove_it(host):
    stale = read_host(host)
    conn = libvirt.open("test:///default")
    try:
        xml = domain_xml("web01", "0b7b0c54-7a6c-4ae4-9a2e-3c1cde1c4c02", "shutoff")
        dom = conn.defineXML(xml.replace("<test:runstate", "<!--").replace("</test:runstate>", "-->"))
        try:
            wait_for(lambda: Domain.objects.filter(name="web01").exists(), 5, what="the definition event")

            result = store(host, stale)

            assert result.removed == 0
            assert Domain.objects.filter(name="web01", host=host).exists()
        finally:
            dom.undefine()
    finally:
        conn.close()


def test_of_two_syncs_at_once_the_later_read_stands_though_the_earlier_one_writes_first(default_driver):  # noqa: F811
    host = Host.objects.create(name="kvm01", uri="test:///default")
    assert sync_host(host).online
    earlier = read_host(host)  # the periodic sync reads: "running"…
    default_driver.destroy()
    later = read_host(host)  # …the sync after a migration reads: "shut off"…

    store(host, earlier)  # …the earlier read is written first,
    store(host, later)  # the later one after it: the later word stands.

    assert Domain.objects.get(name="test").state == "shutoff"
