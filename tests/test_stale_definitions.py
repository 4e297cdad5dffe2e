"""Showing a VM once with its other definitions, and removing a stale one (test driver)."""

import pytest

from hosts.models import Domain, DomainDefinition, Host
from hosts.sync import sync_hosts
from migrations_app.models import AuditEntry, Migration
from tests.migration_helpers import migration_for
from tests.testdriver import domain_uuid, write_host

pytestmark = pytest.mark.django_db

WEB01 = domain_uuid("kvm02", 1)


@pytest.fixture
def hosts(tmp_path):
    """web01 runs on kvm01 and is still defined, shut off, on kvm02."""
    write_host(tmp_path, "kvm01", domains=[("web01", WEB01, "running")])
    write_host(tmp_path, "kvm02", domains=[("web01", WEB01, "shutoff"), ("db01", domain_uuid("kvm02", 2), "shutoff")])
    found = {n: Host.objects.create(name=n, uri=f"test://{tmp_path}/{n}.xml") for n in ("kvm01", "kvm02")}
    sync_hosts()
    return found


def remove(api, user, host):
    api.force_authenticate(user)
    web01 = Domain.objects.get(uuid=WEB01)
    return api.post(f"/api/domains/{web01.pk}/remove-definition/", {"host": host}, format="json")


def test_the_api_lists_the_vm_once_where_it_runs_with_its_other_definitions(api, viewer, hosts):
    api.force_authenticate(viewer)
    body = api.get("/api/domains/", {"name": "web01"}).json()
    assert body["count"] == 1
    web01 = body["results"][0]
    assert (web01["host"], web01["state"], web01["split_brain"]) == ("kvm01", "running", False)
    assert web01["running_on"] == ["kvm01"]
    assert [(d["host"], d["state"]) for d in web01["also_defined"]] == [("kvm02", "shutoff")]


def test_the_pages_say_where_else_the_vm_is_defined(client, operator, hosts):
    client.force_login(operator)
    web01 = Domain.objects.get(uuid=WEB01)
    page = client.get(web01.get_absolute_url()).content.decode()
    assert 'on <a href="/hosts/kvm02/">kvm02</a> (shut off)' in page
    assert f"/domains/{WEB01}/definitions/kvm02/remove/" in page
    listing = client.get("/domains/").content.decode()
    assert listing.count(">web01</a>") == 1 and "also defined (shut off) on kvm02" in listing
    host_page = client.get("/hosts/kvm02/").content.decode()
    assert "Also defined here" in host_page and ">kvm01</a> (running)" in host_page


def test_a_viewer_sees_no_remove_action_and_cannot_use_it(client, api, viewer, hosts):
    client.force_login(viewer)
    page = client.get(Domain.objects.get(uuid=WEB01).get_absolute_url()).content.decode()
    assert "remove this definition" not in page
    assert client.post(f"/domains/{WEB01}/definitions/kvm02/remove/").status_code == 403
    assert remove(api, viewer, "kvm02").status_code == 403
    assert DomainDefinition.objects.filter(host=hosts["kvm02"], domain__uuid=WEB01).exists()


def test_an_operator_removes_the_stale_definition_after_confirming(client, operator, hosts):
    client.force_login(operator)
    url = f"/domains/{WEB01}/definitions/kvm02/remove/"
    confirm = client.get(url).content.decode()
    assert "no disk is deleted" in confirm and "Yes, remove it from kvm02" in confirm
    assert DomainDefinition.objects.filter(host=hosts["kvm02"], domain__uuid=WEB01).exists()

    response = client.post(url, follow=True)

    assert "web01 is no longer defined on kvm02; no disk was touched." in response.content.decode()
    web01 = Domain.objects.get(uuid=WEB01)
    assert web01.host == hosts["kvm01"] and web01.other_definitions == []
    entry = AuditEntry.objects.get(action="host")
    assert entry.username == "oscar" and entry.source_name == "kvm02"
    assert "removed the stale definition of web01 from kvm02" in entry.message


def test_the_definition_where_the_vm_runs_cannot_be_removed(api, operator, hosts):
    response = remove(api, operator, "kvm01")
    assert response.status_code == 409
    assert "kvm01 is where web01 is running" in response.json()["detail"]
    assert DomainDefinition.objects.filter(domain__uuid=WEB01).count() == 2
    assert not AuditEntry.objects.exists()


def test_a_definition_that_runs_is_not_stale(api, operator, hosts):
    # kvm02 says "paused" now: the VM is active there too.
    DomainDefinition.objects.filter(host=hosts["kvm02"], domain__uuid=WEB01).update(state="paused")
    response = remove(api, operator, "kvm02")
    assert response.status_code == 409 and "web01 is paused on kvm02: it is not stale" in response.json()["detail"]


def test_nothing_is_removed_while_the_vm_is_being_migrated(api, operator, hosts):
    migration_for(Domain.objects.get(uuid=WEB01), hosts["kvm02"], status="running")
    response = remove(api, operator, "kvm02")
    assert response.status_code == 409 and "being migrated" in response.json()["detail"]


def test_a_split_brain_vm_refuses_removal_and_migration(api, operator, hosts):
    Domain.objects.filter(uuid=WEB01).update(split_brain=True)
    DomainDefinition.objects.filter(host=hosts["kvm02"], domain__uuid=WEB01).update(state="running")

    assert remove(api, operator, "kvm02").status_code == 409
    web01 = Domain.objects.get(uuid=WEB01)
    response = api.post(
        "/api/migrations/", {"domain": web01.pk, "target_host": hosts["kvm02"].pk, "mode": "live"}, format="json"
    )
    assert response.status_code == 409
    assert "web01 runs on kvm01 and kvm02 at once (split brain)" in str(response.json())
    assert not Migration.objects.exists()


def test_the_worker_refuses_a_migration_of_a_vm_that_became_a_split_brain(hosts):
    from migrations_app.checks import run_checks

    migration = migration_for(Domain.objects.get(uuid=WEB01), hosts["kvm02"])
    Domain.objects.filter(uuid=WEB01).update(split_brain=True)
    DomainDefinition.objects.filter(host=hosts["kvm02"], domain__uuid=WEB01).update(state="running")

    results = run_checks(migration)

    assert [(r.name, r.result) for r in results] == [("single_copy", "fail")]
