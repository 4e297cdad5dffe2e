"""Copying disks without naming a target pool: the pool named like the source's
if the target has one with room, else the target's pool with the most room; the
form pre-selects what the API applies, and when no pool can hold the disks the
refusal says what to do."""

import re

import pytest

from hosts.models import Domain, Host
from hosts.sync import sync_host
from migrations_app.models import Migration
from tests.testdriver import domain_uuid, domain_xml, pool_xml, write_host

pytestmark = pytest.mark.django_db

GiB = 1024**3


def make_hosts(tmp_path, target_pools):
    """kvm01 runs vm1, whose 20 GiB disk holds 5 GiB in kvm01's pool ``images``;
    kvm02 has ``target_pools``: (name, GiB free) pairs."""
    vm1 = domain_xml("vm1", domain_uuid("kvm01", 1), disk="/srv/images/vm1.qcow2")
    source = [pool_xml("kvm01", "images", "/srv/images", volumes=[("vm1.qcow2", 20, 5)])]
    kvm01 = Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01", domains=[vm1], pools=source))
    pools = [pool_xml("kvm02", name, f"/srv/kvm02/{name}", gib) for name, gib in target_pools]
    kvm02 = Host.objects.create(name="kvm02", uri=write_host(tmp_path, "kvm02", domains=[], pools=pools))
    assert sync_host(kvm01).online and sync_host(kvm02).online
    domain = Domain.objects.get(name="vm1")
    assert domain.disks[0]["pool"] == "images" and domain.disks[0]["allocation"] == 5 * GiB
    return domain, kvm02


def copy_by_api(api, user, domain, target, **pool):
    """A live migration with copy storage, asked through the API (``target_pool=`` to name one)."""
    api.force_authenticate(user)
    return api.post(
        "/api/migrations/",
        {"domain": domain.pk, "target_host": target.pk, "mode": "live", "storage": "copy", **pool},
        format="json",
    )


def preselected(client, user, domain, target):
    """The pool the form shows chosen (a pool's name: the value it sends), and the
    one it marks as the default in ``target``'s group (for the page to choose
    when another target is picked)."""
    client.force_login(user)
    page = client.get(f"/migrations/new/?domain={domain.uuid}&target={target.pk}").content.decode()
    select = re.search(r'<select name="target_pool".*?</select>', page, re.S).group(0)
    group = re.search(rf'<optgroup label="{target.name}">(.*?)</optgroup>', select, re.S).group(1)
    chosen = re.findall(r'<option value="([^"]*)"[^>]*\bselected\b', select)
    marked = re.findall(r'<option value="([^"]*)"[^>]*data-default', group)
    return [c for c in chosen if c], marked


def test_the_target_pool_named_like_the_source_pool_is_the_default(tmp_path, api, client, operator):
    # ``images`` on the target has less room than ``local``, but enough, and the same name.
    domain, kvm02 = make_hosts(tmp_path, [("local", 90), ("images", 10)])
    assert preselected(client, operator, domain, kvm02) == (["images"], ["images"])
    response = copy_by_api(api, operator, domain, kvm02)
    assert response.status_code == 201, response.content
    assert response.json()["target_pool"] == "images"
    assert Migration.objects.get().target_pool == "images"


def test_without_a_pool_of_that_name_the_one_with_most_room_is_the_default(tmp_path, api, client, operator):
    domain, kvm02 = make_hosts(tmp_path, [("local", 50), ("big", 80), ("small", 2)])
    assert preselected(client, operator, domain, kvm02) == (["big"], ["big"])
    response = copy_by_api(api, operator, domain, kvm02)
    assert response.status_code == 201, response.content
    assert response.json()["target_pool"] == "big"


def test_a_pool_of_that_name_too_small_for_the_disks_gives_way_to_one_with_room(tmp_path, api, operator):
    domain, kvm02 = make_hosts(tmp_path, [("images", 3), ("local", 40)])
    response = copy_by_api(api, operator, domain, kvm02)
    assert response.status_code == 201, response.content
    assert response.json()["target_pool"] == "local"


def test_a_pool_chosen_by_hand_is_kept(tmp_path, api, operator):
    domain, kvm02 = make_hosts(tmp_path, [("images", 100), ("local", 40)])
    response = copy_by_api(api, operator, domain, kvm02, target_pool="local")
    assert response.status_code == 201, response.content
    assert response.json()["target_pool"] == "local"


def test_a_pool_the_target_does_not_have_is_refused_with_the_ones_it_has(tmp_path, api, operator):
    domain, kvm02 = make_hosts(tmp_path, [("images", 100), ("local", 40)])
    response = copy_by_api(api, operator, domain, kvm02, target_pool="nvme")
    assert response.status_code == 400, response.content
    said = response.json()["target_pool"][0]
    assert said.startswith("kvm02 has no storage pool named nvme. Choose one of: images, local;")
    assert not Migration.objects.exists()


def test_the_form_left_on_its_default_pool_creates_the_same_migration(tmp_path, client, operator):
    domain, kvm02 = make_hosts(tmp_path, [("local", 90), ("images", 10)])
    client.force_login(operator)
    fields = {"domain": domain.pk, "target_host": kvm02.pk, "mode": "live", "storage": "copy", "target_pool": ""}
    confirm = client.post(f"/migrations/new/?domain={domain.uuid}", fields).content.decode()
    assert "Its disks are copied into pool images on kvm02." in confirm
    response = client.post(f"/migrations/new/?domain={domain.uuid}", {**fields, "confirmed": "1"})
    assert response.status_code == 302
    assert Migration.objects.get().target_pool == "images"


def test_when_no_pool_can_hold_the_disks_both_say_what_to_do(tmp_path, api, client, operator):
    domain, kvm02 = make_hosts(tmp_path, [("images", 3), ("local", 4)])
    assert preselected(client, operator, domain, kvm02) == ([], [])
    response = copy_by_api(api, operator, domain, kvm02)
    assert response.status_code == 400
    said = response.json()["target_pool"][0]
    assert "No storage pool on kvm02 has room for the 5.0 GiB of disks of vm1 (the most free is 4.0 GiB)" in said
    assert "Free space in a pool there" in said and "choose another target host" in said
    fields = {"domain": domain.pk, "target_host": kvm02.pk, "mode": "live", "storage": "copy", "confirmed": "1"}
    page = client.post(f"/migrations/new/?domain={domain.uuid}", fields)
    assert page.context["form"].errors["target_pool"] == [said]
    assert not Migration.objects.exists()


def test_a_target_without_pools_is_refused_in_words(tmp_path, api, operator):
    domain, kvm02 = make_hosts(tmp_path, [])
    response = copy_by_api(api, operator, domain, kvm02)
    assert response.status_code == 400
    assert "kvm02 has no active storage pool to copy the disks of vm1 into" in response.json()["target_pool"][0]
