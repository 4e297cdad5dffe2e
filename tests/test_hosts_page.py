"""The Hosts page: every host, and operators register one there by the API's rules and audit."""

import pytest

from hosts.models import Host
from migrations_app.models import AuditEntry
from tests.testdriver import write_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def kvmweb_key(settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"


def test_viewers_see_the_hosts_without_the_add_button(client, viewer, tmp_path, kvmweb_key):
    Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01"))
    client.force_login(viewer)
    page = client.get("/hosts/").content.decode()
    assert 'data-host="kvm01"' in page
    assert "Add host" not in page and 'name="uri"' not in page
    assert client.post("/hosts/", {"name": "kvm02", "uri": "test:///default"}).status_code == 403
    assert not Host.objects.filter(name="kvm02").exists()


def test_operators_get_the_form_with_kvmweb_s_key_to_paste(client, operator, kvmweb_key):
    client.force_login(operator)
    page = client.get("/hosts/?add=1").content.decode()
    assert 'id="add-host-button"' in page and '<details class="card" id="add-host" open>' in page
    assert "&gt;&gt; /root/.ssh/authorized_keys" in page and "ssh-ed25519 " in page


def test_an_operator_registers_a_host_from_the_page_and_it_is_read_and_audited(client, operator, tmp_path, kvmweb_key):
    client.force_login(operator)
    response = client.post("/hosts/", {"name": "kvm01", "uri": write_host(tmp_path, "kvm01", count=2)})
    assert response.status_code == 302 and response["Location"] == "/hosts/kvm01/"
    host = Host.objects.get(name="kvm01")
    assert host.status == "online" and host.domains.count() == 2
    entry = AuditEntry.objects.get(source_name="kvm01")
    assert entry.username == "oscar" and entry.message.startswith("Registered host kvm01 at test:///")


def test_the_page_refuses_what_the_api_refuses_and_says_why(client, operator, tmp_path, kvmweb_key):
    Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01"))
    client.force_login(operator)
    response = client.post("/hosts/", {"name": "kvm02", "uri": "qemu+ssh://kvm02/sytem"})
    assert response.status_code == 400
    assert "The path must be exactly /system, not &#x27;/sytem&#x27;" in response.content.decode()
    response = client.post("/hosts/", {"name": "kvm01", "uri": "test:///default"})
    assert response.status_code == 400 and "host with this name already exists" in response.content.decode()
    # What was typed stays in the form.
    assert 'value="test:///default"' in response.content.decode()
    assert Host.objects.count() == 1 and not AuditEntry.objects.exists()


def test_registering_by_the_api_is_audited_too(api, operator, tmp_path):
    api.force_authenticate(operator)
    response = api.post("/api/hosts/", {"name": "kvm01", "uri": write_host(tmp_path, "kvm01")}, format="json")
    assert response.status_code == 201
    assert AuditEntry.objects.get(source_name="kvm01").message.startswith("Registered host kvm01")
