"""The cluster's balance page on test-driver hosts: the spread now and after the
plan, its moves, and the confirmation that runs it (operators only)."""

import re

import pytest
from django.test import Client

from hosts.models import Domain, Host
from hosts.sync import sync_host
from maintenance.models import Evacuation, Kind
from tests.testdriver import domain_uuid, domain_xml, write_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def uneven(tmp_path):
    """Three hosts of 8 GiB (nothing reserved), six running 1 GiB guests all on kvm01;
    one of them named with markup (a name comes from libvirt: anyone may choose it)."""
    for name, count in (("kvm01", 6), ("kvm02", 0), ("kvm03", 0)):
        domains = [domain_xml(f"{name}-vm{i}", domain_uuid(name, i), memory_mib=1024) for i in range(count)]
        uri = write_host(tmp_path, name, domains=domains, memory_mib=8192)
        assert sync_host(Host.objects.create(name=name, uri=uri, memory_reserved_mib=0)).online
    Domain.objects.filter(name="kvm01-vm0").update(name="<b>vm0</b>")


def rows(page, table):
    body = re.search(rf'<table class="grid" id="{table}">(.*?)</table>', page, re.S).group(1)
    return [
        re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", tr)).strip()
        for tr in re.findall(r"<tr data-[^>]*>(.*?)</tr>", body, re.S)
    ]


def test_viewers_see_the_spread_and_the_moves_read_only(client, viewer, uneven):
    client.force_login(viewer)

    response = client.get("/cluster/balance/")

    assert response.status_code == 200
    page = response.content.decode()
    assert 'href="/cluster/balance/"' in page  # in the navigation
    # kvm01 holds all 6 GiB of 24: 75 % against a mean of 25 %; after four moves, each host 25 %.
    assert rows(page, "spread") == [
        "kvm01 75.0 % 25.0 % 37.5 % 12.5 % within 10 points",
        "kvm02 0.0 % 25.0 % 0.0 % 12.5 % within 10 points",
        "kvm03 0.0 % 25.0 % 0.0 % 12.5 % within 10 points",
    ]
    assert "Furthest from the mean: 50.0 points of memory (25.0 of vCPUs) now, 0.0 (0.0) after the plan." in (
        re.sub(r"\s+", " ", page)
    )
    moves = rows(page, "plan")
    assert len(moves) == 4 and all(" kvm01 kvm0" in m and " s " in m for m in moves)
    assert "memory committed" in page  # each move's why
    assert 'id="confirm"' not in page and "Only operators may run a balance plan." in page
    assert client.post("/cluster/balance/").status_code == 403
    assert not Evacuation.objects.exists()


def test_names_are_escaped(client, viewer, uneven):
    client.force_login(viewer)
    page = client.get("/cluster/balance/").content.decode()
    assert "&lt;b&gt;vm0&lt;/b&gt;" in page and "<b>vm0" not in page


def test_an_operator_confirms_the_plan_shown_and_follows_the_run(client, operator, uneven):
    client.force_login(operator)
    page = client.get("/cluster/balance/").content.decode()
    assert 'id="confirm"' in page and "csrfmiddlewaretoken" in page
    digest = re.search(r'name="digest" value="([0-9a-f]+)"', page).group(1)

    response = client.post("/cluster/balance/", {"digest": digest, "confirm": "on"})

    run = Evacuation.objects.get()
    assert run.kind == Kind.BALANCE and run.requested_by == operator
    assert response.status_code == 302 and response["Location"] == f"/evacuations/{run.pk}/"
    detail = client.get(response["Location"]).content.decode()
    assert f"Balance #{run.pk} of" in detail and "the cluster" in detail
    moves = rows(detail, "moves")
    # Each planned move, from kvm01, not started yet (no worker runs here): two to each idle host.
    assert sorted(m.split(" ", 1)[1] for m in moves) == sorted(
        ["kvm01 kvm02 Waiting for a slot"] * 2 + ["kvm01 kvm03 Waiting for a slot"] * 2
    )
    assert rows(detail, "spread")[0] == "kvm01 75.0 % 25.0 % 37.5 % 12.5 %"
    # While it runs the page says so, and offers no second run.
    again = client.get("/cluster/balance/").content.decode()
    assert f'Balance <a href="/evacuations/{run.pk}/">#{run.pk}</a> is under way' in again
    assert 'id="confirm"' not in again


def test_a_plan_that_changed_since_it_was_shown_is_not_run(client, operator, uneven):
    client.force_login(operator)
    page = client.get("/cluster/balance/").content.decode()
    digest = re.search(r'name="digest" value="([0-9a-f]+)"', page).group(1)
    # Meanwhile one of the VMs went away.
    Domain.objects.filter(name="kvm01-vm5").delete()

    response = client.post("/cluster/balance/", {"digest": digest, "confirm": "on"})

    assert response.status_code == 200
    assert "The plan changed since it was shown" in response.content.decode()
    assert not Evacuation.objects.exists()


def test_the_confirmation_needs_its_csrf_token(operator, uneven):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operator)
    page = browser.get("/cluster/balance/").content.decode()
    digest = re.search(r'name="digest" value="([0-9a-f]+)"', page).group(1)

    assert browser.post("/cluster/balance/", {"digest": digest, "confirm": "on"}).status_code == 403
    assert not Evacuation.objects.exists()


def test_without_hosts_the_page_says_there_is_nothing_to_balance(client, operator):
    client.force_login(operator)
    page = client.get("/cluster/balance/").content.decode()
    assert "No online host outside maintenance: nothing to balance." in page
    assert 'id="confirm"' not in page and 'id="deviation"' not in page
