"""The pages show the inventory, and escape what libvirt and users put in it."""

import pytest

from hosts.models import Host
from hosts.sync import sync_host
from tests.testdriver import domain_uuid, domain_xml, write_host

pytestmark = pytest.mark.django_db

EVIL = "<script>alert(1)</script>"
# libvirt refuses '/' in a domain name, so a name attacks with an attribute instead.
EVIL_NAME = "<img src=x onerror=alert(1)>"


def test_the_dashboard_lists_hosts_with_memory_and_counts(client, viewer, tmp_path):
    sync_host(Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01", count=6)))
    client.force_login(viewer)
    page = client.get("/").content.decode()
    assert 'data-host="kvm01"' in page
    assert "4 running / 6" in page.replace('<span class="count">', "").replace("</span>", "")
    assert "16.0 GiB" in page  # total memory, in the bar's title
    assert "1 host · 6 virtual machines, 4 running" in page  # the words the live feed sends too


def test_host_page_lists_pools_networks_and_domains(client, viewer, tmp_path):
    sync_host(Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01", count=2)))
    client.force_login(viewer)
    page = client.get("/hosts/kvm01/").content.decode()
    assert "kvm01-vm000" in page and "kvm01-vm001" in page
    assert "lab-net" in page and "br0" in page
    assert "/var/lib/libvirt/images" in page


def test_domain_names_are_escaped(client, viewer, tmp_path):
    uuid = domain_uuid("kvm01", 7)
    uri = write_host(tmp_path, "kvm01", domains=[domain_xml(EVIL_NAME, uuid, disk=f"/img/{EVIL}")])
    assert sync_host(Host.objects.create(name="kvm01", uri=uri)).online
    client.force_login(viewer)
    for url in ["/hosts/kvm01/", "/domains/", f"/domains/{uuid}/"]:
        page = client.get(url).content.decode()
        assert EVIL_NAME not in page, url
        assert "&lt;img src=x onerror=alert(1)&gt;" in page, url
    page = client.get(f"/domains/{uuid}/").content.decode()
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_libvirt_messages_are_escaped(client, viewer):
    Host.objects.create(
        name="kvm01",
        uri="test:///default",
        status="offline",
        status_reason=f"Cannot reach {EVIL}",
        status_detail=f"libvirt: {EVIL}",
    )
    client.force_login(viewer)
    for url in ["/", "/hosts/kvm01/"]:
        page = client.get(url).content.decode()
        assert EVIL not in page, url
        assert "Cannot reach &lt;script&gt;" in page, url


def test_the_sync_button_refreshes_the_host(client, operator, tmp_path):
    host = Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01", count=2))
    client.force_login(operator)
    response = client.post("/hosts/kvm01/sync/", follow=True)
    assert "Inventory of kvm01 refreshed" in response.content.decode()
    assert host.domains.count() == 2


def test_the_domain_list_filters_by_host_name_and_state(client, viewer, tmp_path):
    sync_host(Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01", count=3)))
    sync_host(Host.objects.create(name="kvm02", uri=write_host(tmp_path, "kvm02", count=3)))
    client.force_login(viewer)
    page = client.get("/domains/", {"host": "kvm02", "state": "shutoff"}).content.decode()
    assert "kvm02-vm000" in page
    assert "kvm02-vm001" not in page and "kvm01-vm000" not in page
    page = client.get("/domains/", {"q": "vm002"}).content.decode()
    assert "kvm01-vm002" in page and "kvm02-vm002" in page and "vm001" not in page


def test_the_domain_list_pages_keep_their_filters(client, viewer, tmp_path):
    sync_host(Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01", count=150)))
    client.force_login(viewer)
    first = client.get("/domains/", {"host": "kvm01"}).content.decode()
    assert "Page 1 of 2" in first
    assert 'href="?host=kvm01&amp;page=2"' in first
    second = client.get("/domains/", {"host": "kvm01", "page": 2}).content.decode()
    assert "kvm01-vm149" in second and "kvm01-vm000" not in second
