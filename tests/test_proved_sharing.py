"""The host page shows, per pool, what the shared-storage check proved: which
hosts it was found shared with (or not) and when, else "not proved yet"."""

import re

import pytest
from django.utils.timezone import localtime

from hosts.models import Domain, Host, PoolSharing
from hosts.sync import sync_host
from tests.migration_helpers import domain, register_lab, request
from tests.testdriver import domain_uuid, domain_xml, pool_xml, write_host

EVIL = "<script>alert(1)</script>"


def pools_table(page):
    return re.search(r"<h2>Storage pools</h2>.*?</table>", page, re.S).group(0)


def row_of(table, pool):
    """The pool's row, as words (tags left out)."""
    row = re.search(rf"<tr><td>{re.escape(pool)}\b.*?</tr>", table, re.S).group(0)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row))


@pytest.fixture
def hosts(tmp_path, db):
    """vm1's disk is /srv/share/vm1.qcow2 in pool ``share`` on kvm01; kvm02 has a
    file at the same path in its pool ``share2``, but it is another file."""
    vm1 = domain_xml("vm1", domain_uuid("kvm01", 1), disk="/srv/share/vm1.qcow2")
    kvm01 = Host.objects.create(
        name="kvm01",
        uri=write_host(
            tmp_path,
            "kvm01",
            domains=[vm1],
            pools=[pool_xml("kvm01", "share", "/srv/share", volumes=[("vm1.qcow2", 1, 1)])],
        ),
    )
    kvm02 = Host.objects.create(
        name="kvm02",
        uri=write_host(
            tmp_path,
            "kvm02",
            domains=[],
            pools=[pool_xml("kvm02", "share2", "/srv/share", volumes=[("vm1.qcow2", 1, 1)])],
        ),
    )
    kvm03 = Host.objects.create(name="kvm03", uri=write_host(tmp_path, "kvm03"))
    for host in (kvm01, kvm02, kvm03):
        assert sync_host(host).online
    return kvm01, kvm02, kvm03


@pytest.mark.django_db
def test_a_pool_never_checked_is_not_proved_yet(client, viewer, hosts):
    client.force_login(viewer)
    table = pools_table(client.get(hosts[0].get_absolute_url()).content.decode())
    assert "not proved yet" in row_of(table, "share")


@pytest.mark.django_db
def test_the_check_records_what_it_found_and_both_host_pages_show_it(client, api, operator, hosts):
    kvm01, kvm02, kvm03 = hosts
    api.force_authenticate(operator)
    dom = Domain.objects.get(name="vm1")
    response = api.post(
        "/api/migrations/",
        {"domain": dom.pk, "target_host": kvm02.pk, "mode": "live", "dry_run": True},
        format="json",
    )
    assert response.status_code == 200, response.content
    checks = {c["name"]: c for c in response.json()["checks"]}
    assert "they are different files" in checks["shared_storage"]["message"]
    found = PoolSharing.objects.get(host=kvm01, pool="share", peer=kvm02)
    assert found.shared is False and found.peer_pool == "share2"
    assert PoolSharing.objects.get(host=kvm02, pool="share2", peer=kvm01).shared is False

    client.force_login(operator)
    row = row_of(pools_table(client.get(kvm01.get_absolute_url()).content.decode()), "share")
    assert "not shared with kvm02" in row and localtime(found.checked_at).strftime("%Y-%m-%d %H:%M") in row
    row = row_of(pools_table(client.get(kvm02.get_absolute_url()).content.decode()), "share2")
    assert "not shared with kvm01" in row
    # kvm03 was not part of it.
    assert "not proved yet" in row_of(pools_table(client.get(kvm03.get_absolute_url()).content.decode()), "local")


@pytest.mark.django_db
def test_a_proof_lists_the_peer_and_when_and_replaces_an_older_finding(client, viewer, hosts):
    kvm01, kvm02, kvm03 = hosts
    PoolSharing.record(kvm01, "share", kvm02, "share2", shared=False)
    PoolSharing.record(kvm01, "share", kvm02, "share2", shared=True)
    PoolSharing.record(kvm01, "share", kvm03, "local", shared=True)
    client.force_login(viewer)
    row = row_of(pools_table(client.get(kvm01.get_absolute_url()).content.decode()), "share")
    assert "not shared" not in row and "not proved yet" not in row
    assert re.search(r"kvm02.*share2.*proved \d{4}-\d\d-\d\d \d\d:\d\d", row, re.S)
    assert "kvm03" in row
    assert "dir /srv/share 99.0 GiB of 100.0 GiB yes" in row


@pytest.mark.django_db
def test_the_host_api_carries_each_pools_findings(api, viewer, hosts):
    kvm01, kvm02, kvm03 = hosts
    PoolSharing.record(kvm01, "share", kvm02, "share2", shared=True)
    PoolSharing.record(kvm01, "share", kvm03, "local", shared=False)
    api.force_authenticate(viewer)
    pools = {p["name"]: p for p in api.get(f"/api/hosts/{kvm01.pk}/").json()["pools"]}
    found = {f["peer"]: (f["peer_pool"], f["shared"]) for f in pools["share"]["sharing"]}
    assert found == {"kvm02": ("share2", True), "kvm03": ("local", False)}
    assert all(f["checked_at"] for f in pools["share"]["sharing"])
    assert all(p["sharing"] == [] for name, p in pools.items() if name != "share")
    # The other side was recorded too.
    there = {p["name"]: p for p in api.get(f"/api/hosts/{kvm02.pk}/").json()["pools"]}
    assert [f["peer"] for f in there["share2"]["sharing"]] == ["kvm01"]


@pytest.mark.django_db
def test_pool_names_are_escaped(client, viewer, hosts):
    kvm01, kvm02, _kvm03 = hosts
    kvm01.pools.filter(name="share").update(name=f"share{EVIL}")
    PoolSharing.record(kvm01, f"share{EVIL}", kvm02, f"there{EVIL}", shared=True)
    client.force_login(viewer)
    page = client.get(kvm01.get_absolute_url()).content.decode()
    assert EVIL not in page
    assert "there&lt;script&gt;" in page


@pytest.mark.lab
@pytest.mark.django_db(transaction=True)
def test_storage_the_check_proves_shared_is_shown_shared_on_both_host_pages(api, client, operator, lab, lab_guest):
    hosts = register_lab(lab)
    name = lab_guest("kvm01", disk="shared")
    response = request(api, operator, domain(name), hosts["kvm02"], dry_run=True)
    assert response.status_code == 200, response.content
    proof = PoolSharing.objects.get(host=hosts["kvm01"], peer=hosts["kvm02"])
    assert proof.shared is True
    client.force_login(operator)
    row = row_of(pools_table(client.get(hosts["kvm01"].get_absolute_url()).content.decode()), proof.pool)
    assert "kvm02" in row and "proved " in row and "not proved yet" not in row
    back = row_of(pools_table(client.get(hosts["kvm02"].get_absolute_url()).content.decode()), proof.peer_pool)
    assert "kvm01" in back and "proved " in back
