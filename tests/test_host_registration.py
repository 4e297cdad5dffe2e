"""Registering hosts through the API: good, malformed, unreachable and duplicate URIs."""

import pytest

from hosts.models import Host
from tests.testdriver import write_host

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "uri, says",
    [
        ("qemu+ssh://", "names the ssh transport but no host"),  # "Unable to parse URI"
        ("kvm02", "has no '://'"),
        ("qemu+sssh://kvm02/system", "The transport 'sssh' is not allowed; use ssh, libssh or tls"),
        ("kvm://kvm02/system", "'kvm' is not allowed as a libvirt driver"),
        ("qemu+ssh://kvm02/sytem", "The path must be exactly /system, not '/sytem'"),
        ("qemu+tcp://kvm02:99999/system", "'99999' is not a port"),
        ("qemu+ssh://kvm 02/system", "must not contain spaces"),
        ("", "empty"),
    ],
)
def test_a_malformed_uri_is_refused_with_what_is_wrong(api, operator, uri, says):
    api.force_authenticate(operator)
    response = api.post("/api/hosts/", {"name": "kvm02", "uri": uri}, format="json")
    assert response.status_code == 400
    message = " ".join(response.json()["uri"])
    assert says in message
    assert not Host.objects.exists()


def test_a_reachable_host_is_registered_and_read_at_once(api, operator, tmp_path):
    api.force_authenticate(operator)
    response = api.post("/api/hosts/", {"name": "kvm01", "uri": write_host(tmp_path, "kvm01", count=2)}, format="json")
    assert response.status_code == 201, response.content
    host = Host.objects.get(name="kvm01")
    assert host.status == "online"
    assert host.domains.count() == 2


def test_an_unreachable_host_is_accepted_and_shown_offline_with_the_reason(api, operator):
    api.force_authenticate(operator)
    response = api.post("/api/hosts/", {"name": "kvm09", "uri": "qemu+tcp://127.0.0.1:1/system"}, format="json")
    assert response.status_code == 201
    detail = api.get(f"/api/hosts/{response.json()['id']}/").json()
    assert detail["status"] == "offline"
    assert "Check that the host is up, that libvirtd listens there (listen_tcp = 1" in detail["status_reason"]
    # Not the socket's own words ("Connection refused"): they tell a closed port from a filtered one.
    assert detail["status_detail"] == ""


def test_a_duplicate_name_or_uri_is_refused(api, operator, tmp_path):
    uri = write_host(tmp_path, "kvm01")
    Host.objects.create(name="kvm01", uri=uri)
    api.force_authenticate(operator)

    same_name = api.post("/api/hosts/", {"name": "kvm01", "uri": "test:///default"}, format="json")
    same_uri = api.post("/api/hosts/", {"name": "other", "uri": uri}, format="json")

    assert same_name.status_code == 400 and "already exists" in same_name.json()["name"][0]
    assert same_uri.status_code == 400
    assert "Host 'kvm01' is already registered at this URI" in same_uri.json()["uri"][0]


def test_viewers_cannot_register_hosts_but_can_read_them(api, viewer):
    api.force_authenticate(viewer)
    response = api.post("/api/hosts/", {"name": "kvm01", "uri": "test:///default"}, format="json")
    assert response.status_code == 403
    assert "Only operators" in response.json()["detail"]
    assert api.get("/api/hosts/").status_code == 200
    assert not Host.objects.exists()


def test_the_sync_endpoint_refreshes_one_host(api, operator, tmp_path):
    host = Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01", count=3))
    api.force_authenticate(operator)
    response = api.post(f"/api/hosts/{host.pk}/sync/")
    assert response.status_code == 200
    body = response.json()
    assert body["sync"]["domains"] == 3 and body["status"] == "online"
    assert [p["name"] for p in body["pools"]] == ["local"]


def test_a_token_gives_api_access_and_only_its_digest_is_stored(client, operator, tmp_path):
    from io import StringIO

    from django.core.management import call_command
    from django.db import connection

    out = StringIO()
    call_command("create_api_token", operator.username, stdout=out)
    token = out.getvalue().split()[-1]
    response = client.get("/api/hosts/", HTTP_AUTHORIZATION=f"Token {token}")
    assert response.status_code == 200
    response = client.get("/api/hosts/", HTTP_AUTHORIZATION="Token wrong")
    assert response.status_code == 401
    # Someone who reads the database file learns nothing that logs in.
    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
        for table in tables:
            cursor.execute(f'SELECT * FROM "{table}"')
            for row in cursor.fetchall():
                assert not any(token in str(value) for value in row), f"the token is stored in {table}"


def test_the_admin_refuses_a_malformed_uri(client, owner):
    client.force_login(owner)
    response = client.post(
        "/admin/hosts/host/add/",
        {
            "name": "kvm02",
            "uri": "qemu+ssh://",
            "max_incoming": 2,
            "max_outgoing": 2,
            "pools-TOTAL_FORMS": 0,
            "pools-INITIAL_FORMS": 0,
            "networks-TOTAL_FORMS": 0,
            "networks-INITIAL_FORMS": 0,
            "domains-TOTAL_FORMS": 0,
            "domains-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 200
    assert "names the ssh transport but no host" in response.content.decode()
    assert not Host.objects.exists()


def test_viewers_see_why_a_host_is_offline_in_plain_words_but_not_libvirt_s_text(api, client, operator, viewer):
    from hosts.libvirt import HostError

    host = Host.objects.create(name="kvm09", uri="qemu+ssh://root@kvm09/system")
    host.mark_unreachable(HostError("The host refused kvmweb's login.", "denied reading /etc/secret-path"))
    host.save()
    api.force_authenticate(operator)
    assert "/etc/secret-path" in api.get(f"/api/hosts/{host.pk}/").json()["status_detail"]
    api.force_authenticate(viewer)
    seen = api.get(f"/api/hosts/{host.pk}/").json()
    assert seen["status_reason"] == "The host refused kvmweb's login." and seen["status_detail"] == ""
    client.force_login(viewer)
    page = client.get("/hosts/kvm09/").content.decode()
    assert "refused kvmweb&#x27;s login" in page and "/etc/secret-path" not in page
    client.force_login(operator)
    assert "/etc/secret-path" in client.get("/hosts/kvm09/").content.decode()


def test_the_admin_s_add_host_page_shows_kvmweb_s_key_and_the_line_for_authorized_keys(
    client, owner, settings, tmp_path
):
    from hosts import sshkeys

    settings.VAR_DIR = tmp_path
    client.force_login(owner)
    page = client.get("/admin/hosts/host/add/").content.decode()
    assert "Run this on the host to let kvmweb log in as root" in page
    assert sshkeys.public_key() in page and "/root/.ssh/authorized_keys" in page


def test_ssh_public_key_prints_kvmweb_s_key_and_register_host_refuses_what_the_api_refuses(settings, tmp_path):
    from io import StringIO

    from django.core.management import CommandError, call_command

    from hosts import sshkeys

    settings.VAR_DIR = tmp_path
    out = StringIO()
    call_command("ssh_public_key", stdout=out)
    assert out.getvalue().strip() == sshkeys.public_key()
    out = StringIO()
    call_command("ssh_public_key", "--command", stdout=out)
    assert out.getvalue().strip() == f"echo '{sshkeys.public_key()}' >> /root/.ssh/authorized_keys"
    with pytest.raises(CommandError, match="'command': it names a program"):
        call_command("register_host", "kvm02", "qemu+ext:///system?command=/bin/true")
    assert not Host.objects.exists()
