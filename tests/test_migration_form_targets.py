"""The migration form offers what can work: targets that can take the VM, copied
disks for a VM with local ones, no "Migrate…" after failed checks, and a link to
the migration already under way."""

import re
import uuid

import pytest

from hosts.models import Domain, Host, PoolSharing, StoragePool
from hosts.sync import sync_host
from migrations_app import checks
from tests.migration_helpers import migration_for
from tests.testdriver import write_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def hosts(testdriver_hosts, tmp_path):
    """kvm01 (the VM's), kvm02, kvm03 in maintenance and kvm04 not answering."""
    kvm03 = Host.objects.create(name="kvm03", uri=write_host(tmp_path, "kvm03"))
    assert sync_host(kvm03).online
    Host.objects.filter(pk=kvm03.pk).update(maintenance=True)
    kvm04 = Host.objects.create(name="kvm04", uri=write_host(tmp_path, "kvm04"))
    Host.objects.filter(pk=kvm04.pk).update(status="offline")
    return {h.name: h for h in Host.objects.all()}


@pytest.fixture
def domain(hosts):
    return hosts["kvm01"].domains.get(name="kvm01-vm001")


def targets(html):
    """The target list: (label, disabled) for each host offered."""
    select = re.search(r'<select name="target_host".*?</select>', html, re.S).group(0)
    return [
        (label, "disabled" in attrs)
        for attrs, label in re.findall(r'<option value="\d+"([^>]*)>([^<]*)</option>', select)
    ]


def test_the_target_list_disables_the_vm_s_host_and_hosts_that_cannot_take_it_with_the_reason(
    client, operator, hosts, domain
):
    client.force_login(operator)
    html = client.get(f"/migrations/new/?domain={domain.uuid}").content.decode()
    assert targets(html) == [
        ("kvm01: kvm01-vm001 runs here now", True),
        ("kvm02", False),
        ("kvm03: in maintenance", True),
        ("kvm04 (offline): not answering", True),
    ]


def test_the_dashboard_form_marks_each_vm_s_host_for_the_page_to_disable(client, operator, hosts, domain):
    client.force_login(operator)
    html = client.get("/migrations/new/?fragment=1").content.decode()
    assert re.search(rf'<option value="{domain.pk}" data-host="kvm01" data-local="">', html)
    assert ("kvm02", False) in targets(html) and ("kvm03: in maintenance", True) in targets(html)


def test_a_vm_with_a_disk_on_storage_only_its_host_has_defaults_to_copying_it(client, operator, hosts, domain):
    StoragePool.objects.create(host=hosts["kvm01"], name="kvm01-only", uuid=uuid.uuid4(), type="dir")
    shared = StoragePool.objects.create(
        host=hosts["kvm01"], name="the-share", uuid=uuid.uuid4(), type="netfs", shared=True
    )
    client.force_login(operator)

    def storage_chosen():
        html = client.get(f"/migrations/new/?domain={domain.uuid}").content.decode()
        return re.search(r'<input type="radio" name="storage" value="(\w+)"[^>]*checked', html).group(1)

    disk = {**domain.disks[0], "pool": shared.name}
    Domain.objects.filter(pk=domain.pk).update(disks=[disk])
    assert storage_chosen() == "shared"
    Domain.objects.filter(pk=domain.pk).update(disks=[disk, {**disk, "target": "vdb", "pool": "kvm01-only"}])
    assert storage_chosen() == "copy"
    html = client.get("/migrations/new/?fragment=1").content.decode()
    assert re.search(rf'<option value="{domain.pk}" data-host="kvm01" data-local="1">', html)
    # A directory pool the storage check proved shared (a share mounted there) is no local disk.
    PoolSharing.record(hosts["kvm01"], "kvm01-only", hosts["kvm02"], "kvm01-only", True)
    assert storage_chosen() == "shared"


def test_migrate_is_disabled_after_the_checks_fail(client, operator, hosts, domain, monkeypatch):
    results = [checks.CheckResult("networks", "fail", "kvm02 has no bridge br0.")]
    monkeypatch.setattr(checks, "run_checks", lambda req, *a, **kw: results)
    client.force_login(operator)
    data = {"domain": domain.pk, "target_host": hosts["kvm02"].pk, "mode": "live", "storage": "shared", "check": "1"}
    html = client.post(f"/migrations/new/?domain={domain.uuid}", data).content.decode()
    assert "A check failed" in html
    assert re.search(r"<button[^>]*data-start disabled[^>]*>Migrate…</button>", html)
    results[0] = checks.CheckResult("networks", "pass", "kvm02 has br0.")
    html = client.post(f"/migrations/new/?domain={domain.uuid}", data).content.decode()
    assert re.search(r"<button[^>]*data-start>Migrate…</button>", html)


def test_already_being_migrated_links_to_that_migration(client, api, operator, hosts, domain):
    running = migration_for(domain, hosts["kvm02"], status="running")
    client.force_login(operator)
    data = {"domain": domain.pk, "target_host": hosts["kvm02"].pk, "mode": "live", "confirmed": "1"}
    html = client.post(f"/migrations/new/?domain={domain.uuid}", data).content.decode()
    assert f"{domain.name} is already being migrated" in html
    assert f'<a href="/migrations/{running.pk}/">Open migration #{running.pk} of {domain.name} (running)</a>' in html
    api.force_authenticate(operator)
    body = {"domain": domain.pk, "target_host": hosts["kvm02"].pk, "mode": "live"}
    response = api.post("/api/migrations/", body, format="json")
    assert response.status_code == 409
    assert response.json()["migration"] == {"id": running.pk, "url": f"/migrations/{running.pk}/"}
