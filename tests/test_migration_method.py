"""How a live migration moves (parallel connections, TLS stream): what a request
may ask, who may ask it, and the libvirt flags the engine then uses."""

import pytest

from hosts.models import Domain, Host
from migrations_app.engine.live import LiveMigration, tls_stream
from migrations_app.models import Migration
from migrations_app.policies import MULTIFD_CONNECTIONS, parallel_connections_for
from tests.migration_helpers import migration_for

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024


@pytest.fixture
def hosts(testdriver_hosts):
    return testdriver_hosts


@pytest.fixture
def domain(hosts):
    return Domain.objects.get(name="kvm01-vm001")


def post(api, user, domain, target, **fields):
    api.force_authenticate(user)
    body = {"domain": domain.pk, "target_host": target.pk, "mode": "live", **fields}
    return api.post("/api/migrations/", body, format="json")


@pytest.mark.parametrize("value", [1, 17, -1])
def test_the_api_refuses_parallel_connections_outside_0_or_2_to_16(api, operator, hosts, domain, value):
    response = post(api, operator, domain, hosts[1], parallel_connections=value)
    assert response.status_code == 400
    assert "parallel_connections" in response.json()
    assert not Migration.objects.exists()


def test_one_connection_is_refused_with_what_to_give_instead(api, operator, hosts, domain):
    response = post(api, operator, domain, hosts[1], parallel_connections=1)
    assert response.json()["parallel_connections"] == [
        "Parallel connections must be 0 (one connection) or from 2 to 16."
    ]


@pytest.mark.parametrize("value", [0, 2, 16])
def test_the_api_takes_parallel_connections_and_records_them(api, operator, hosts, domain, value):
    response = post(api, operator, domain, hosts[1], parallel_connections=value)
    assert response.status_code == 201, response.content
    assert response.json()["parallel_connections"] == value
    assert Migration.objects.get(pk=response.json()["id"]).parallel_connections == value


def test_a_viewer_cannot_ask_for_parallel_connections(api, viewer, hosts, domain):
    response = post(api, viewer, domain, hosts[1], parallel_connections=4)
    assert response.status_code == 403
    assert not Migration.objects.exists()


def test_the_form_refuses_one_connection_in_the_same_words(client, operator, hosts, domain):
    client.force_login(operator)
    page = client.post(
        f"/migrations/new/?domain={domain.uuid}",
        {"domain": domain.pk, "target_host": hosts[1].pk, "mode": "live", "parallel_connections": 1, "confirmed": "1"},
    )
    assert page.status_code == 200
    assert page.context["form"].errors["parallel_connections"] == [
        "Parallel connections must be 0 (one connection) or from 2 to 16."
    ]


def test_the_engine_asks_libvirt_for_parallel_connections_only_when_requested(hosts, domain):
    plain = migration_for(domain, hosts[1])
    assert "parallel" not in LiveMigration(plain, None, None).flag_names(postcopy=False)  # type: ignore[arg-type]
    plain.delete()
    parallel = migration_for(domain, hosts[1], parallel_connections=4)
    assert "parallel" in LiveMigration(parallel, None, None).flag_names(postcopy=False)  # type: ignore[arg-type]


def test_the_stream_goes_over_tls_only_when_both_hosts_are_tls_hosts_with_the_setting_on(hosts, domain):
    source, target = hosts
    m = migration_for(domain, target)
    assert not tls_stream(m)  # test-driver hosts: no TLS
    Host.objects.filter(pk=source.pk).update(uri="qemu+tls://10.0.0.1/system")
    Host.objects.filter(pk=target.pk).update(uri="qemu+tls://10.0.0.2/system")
    m = Migration.objects.select_related("source", "target").get(pk=m.pk)
    assert tls_stream(m)
    assert "tls" in LiveMigration(m, None, None).flag_names(postcopy=False)  # type: ignore[arg-type]
    Host.objects.filter(pk=target.pk).update(migrate_tls=False)
    m = Migration.objects.select_related("source", "target").get(pk=m.pk)
    assert not tls_stream(m)
    Host.objects.filter(pk=target.pk).update(migrate_tls=True)
    Host.objects.filter(pk=source.pk).update(uri="qemu+ssh://root@10.0.0.1/system")
    m = Migration.objects.select_related("source", "target").get(pk=m.pk)
    assert not tls_stream(m)


def test_hosts_registered_over_tls_encrypt_migrations_by_default_and_an_operator_can_turn_it_off(
    api, operator, viewer, hosts
):
    assert Host._meta.get_field("migrate_tls").get_default() is True
    api.force_authenticate(viewer)
    assert api.patch(f"/api/hosts/{hosts[1].pk}/", {"migrate_tls": False}, format="json").status_code == 403
    api.force_authenticate(operator)
    response = api.patch(f"/api/hosts/{hosts[1].pk}/", {"migrate_tls": False}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["migrate_tls"] is False
    assert Host.objects.get(pk=hosts[1].pk).migrate_tls is False


def test_parallel_connections_pay_off_from_the_configured_guest_size(settings):
    settings.KVMWEB_MULTIFD_MIN_MIB = 2048
    assert parallel_connections_for(2047 * MIB) == 0
    assert parallel_connections_for(2048 * MIB) == MULTIFD_CONNECTIONS
