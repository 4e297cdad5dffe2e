"""A host kvmweb never read shows "not read yet", not zeros that look like facts,
and is not offered for maintenance; a read host is."""

import pytest

from hosts.models import Host
from hosts.sync import sync_host
from tests.testdriver import write_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def never_read(db):
    host = Host(name="kvm09", uri="qemu+ssh://root@192.0.2.9/system")
    host.save()
    from hosts.libvirt import HostUnreachable

    host.mark_unreachable(HostUnreachable("kvmweb could not reach sshd on 192.0.2.9 port 22."))
    host.save()
    return host


def test_a_never_read_host_page_says_not_read_yet_instead_of_zeros(client, operator, never_read):
    client.force_login(operator)
    page = client.get("/hosts/kvm09/").content.decode()
    assert "not read yet" in page
    assert "()," not in page and "0 CPUs" not in page and "0 B committed of 0 B" not in page
    assert 'id="enter-maintenance"' not in page, "a host that does not answer cannot be evacuated"
    assert '<dd id="last-read">never</dd>' in page and "(failed)" in page


def test_the_dashboard_row_of_a_never_read_host_has_no_figures(client, viewer, never_read):
    client.force_login(viewer)
    page = client.get("/").content.decode()
    row = page[page.index('data-host="kvm09"') :].split("</tr>")[0]
    assert row.count("not read yet") == 2 and "0 B" not in row and "never read" in row


def test_a_host_that_answers_is_offered_for_maintenance(client, operator, tmp_path):
    sync_host(Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01", count=1)))
    client.force_login(operator)
    page = client.get("/hosts/kvm01/").content.decode()
    assert 'id="enter-maintenance"' in page and "not read yet" not in page and "4 CPUs" in page
