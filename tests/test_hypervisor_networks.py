"""KVMWEB_HYPERVISOR_NETWORKS limits where hosts may be (finding 4)."""

import ipaddress

import pytest
from django.core.management import CommandError, call_command

from hosts.models import Host
from tests.testdriver import write_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def lab_networks_only(settings):
    settings.KVMWEB_HYPERVISOR_NETWORKS = [ipaddress.ip_network("10.213.0.0/16")]
    settings.KVMWEB_ALLOW_TCP = True
    settings.KVMWEB_CONNECT_TIMEOUT = 1


def test_registering_a_host_outside_the_networks_is_refused_with_words(api, operator, lab_networks_only):
    api.force_authenticate(operator)
    response = api.post("/api/hosts/", {"name": "router", "uri": "qemu+tcp://127.0.0.1:22/system"}, format="json")
    assert response.status_code == 400
    assert "not in the networks where hypervisors may be (10.213.0.0/16)" in response.json()["uri"][0]
    assert not Host.objects.exists()
    with pytest.raises(CommandError, match="not in the networks"):
        call_command("register_host", "router", "qemu+tcp://127.0.0.1:22/system")


def test_the_admin_refuses_it_too(client, owner, lab_networks_only):
    client.force_login(owner)
    response = client.post(
        "/admin/hosts/host/add/",
        {"name": "router", "uri": "qemu+tcp://127.0.0.1:22/system", "max_incoming": "2", "max_outgoing": "2"},
    )
    assert "not in the networks where hypervisors may be" in response.content.decode()
    assert not Host.objects.exists()


def test_a_host_registered_before_is_not_connected_to(api, operator, lab_networks_only):
    host = Host.objects.create(name="old", uri="qemu+tcp://127.0.0.1:22/system")
    api.force_authenticate(operator)
    body = api.post(f"/api/hosts/{host.pk}/sync/").json()
    assert body["sync"]["online"] is False
    assert "not in the networks where hypervisors may be" in body["status_reason"]


def test_hosts_inside_the_networks_and_local_ones_are_accepted(api, operator, settings, tmp_path):
    settings.KVMWEB_HYPERVISOR_NETWORKS = [ipaddress.ip_network("127.0.0.0/8")]
    settings.KVMWEB_ALLOW_TCP = True
    settings.KVMWEB_CONNECT_TIMEOUT = 1
    api.force_authenticate(operator)
    inside = api.post("/api/hosts/", {"name": "lo", "uri": "qemu+tcp://127.0.0.1:1/system"}, format="json")
    assert inside.status_code == 201, inside.json()
    local = api.post("/api/hosts/", {"name": "t", "uri": write_host(tmp_path, "t")}, format="json")
    assert local.status_code == 201, local.json()
