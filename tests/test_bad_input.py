"""Malformed input answers 4xx with a message, quickly (finding 7)."""

import time

import pytest

from hosts.models import Host
from hosts.sync import sync_host
from tests.testdriver import write_host

pytestmark = pytest.mark.django_db

BIG = "99999999999999999999999"


@pytest.fixture
def inventory(tmp_path):
    host = Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01", count=2))
    sync_host(host)
    return host


def assert_refused(response, *words):
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    text = response.content.decode()
    for word in words:
        assert word in text, text[:500]


AUDIT_CASES = [
    ("since=2024-01-01T25:00:00", "since"),
    # Parse, but UTC puts them before year 1 or after 9999 (an overflow, unchecked).
    ("until=0001-01-01T00:00:00%2B05:00", "until"),
    ("until=9999-12-31T23:00:00-05:00", "until"),
    ("until=2024-02-30T10:00", "until"),
    ("since=yesterday", "since"),
    ("migration=abc", "migration"),
    (f"migration={BIG}", "migration"),
    ("migration=-1", "migration"),
]


@pytest.mark.parametrize("query, field", AUDIT_CASES)
def test_the_audit_api_refuses_malformed_filters(api, viewer, query, field):
    api.force_authenticate(viewer)
    response = api.get("/api/audit/?" + query)
    assert response.status_code == 400
    assert field in response.json()


@pytest.mark.parametrize("query, field", AUDIT_CASES)
def test_the_audit_page_and_export_refuse_malformed_filters_quickly(client, viewer, query, field):
    client.force_login(viewer)
    response = client.get("/audit/?" + query)
    assert response.status_code == 400
    assert 'role="alert"' in response.content.decode()
    started = time.monotonic()
    response = client.get("/audit/export.csv?" + query)
    # A streamed body must not be consumed for this: it is refused before streaming.
    assert not response.streaming and response.status_code == 400
    assert field in response.content.decode()
    assert time.monotonic() - started < 5


def test_an_offset_postgresql_refuses_is_taken_as_the_same_moment_in_utc(api, viewer):
    # ISO 8601 allows -20:11; PostgreSQL refuses offsets past 15:59.
    api.force_authenticate(viewer)
    assert api.get("/api/audit/?until=0843-12-11T19%3A10%3A13-20%3A11").status_code == 200


@pytest.mark.parametrize("path", ["/api/hosts/", "/api/domains/", "/api/migrations/", "/api/audit/"])
def test_every_list_bounds_limit_and_offset(api, viewer, inventory, path):
    api.force_authenticate(viewer)
    response = api.get(path, {"limit": "9223372036854775808"})
    assert response.status_code == 200
    assert len(response.json()["results"]) <= 1000
    assert_refused(api.get(path, {"offset": "9223372036854775808"}), "offset")


@pytest.mark.parametrize(
    "path, query",
    [
        ("/api/domains/", "state=exploded"),
        ("/api/migrations/", "status=exploded"),
        ("/api/audit/", "action=exploded"),
    ],
)
def test_choice_filters_refuse_unknown_values(api, viewer, path, query):
    api.force_authenticate(viewer)
    assert_refused(api.get(f"{path}?{query}"), "exploded")


@pytest.mark.parametrize("pk", [BIG, "9223372036854775808", "0"])
def test_a_huge_id_is_not_found(api, viewer, pk):
    api.force_authenticate(viewer)
    for path in ("/api/hosts/{}/", "/api/domains/{}/", "/api/migrations/{}/", "/api/audit/{}/"):
        assert api.get(path.format(pk)).status_code == 404, path


def test_the_migration_form_refuses_a_malformed_domain(client, operator):
    client.force_login(operator)
    assert_refused(client.get("/migrations/new/?domain=not-a-uuid"), "not-a-uuid")


@pytest.mark.parametrize("value", [2**64, 2**31, 0, -5])
def test_bandwidth_is_bounded(api, operator, inventory, value, tmp_path):
    api.force_authenticate(operator)
    domain = inventory.domains.first()
    other = Host.objects.create(name="kvm02", uri=write_host(tmp_path, "kvm02"))
    response = api.post(
        "/api/migrations/",
        {"domain": domain.pk, "target_host": other.pk, "mode": "live", "bandwidth_mib": value, "dry_run": True},
        format="json",
    )
    assert response.status_code == 400
    assert "bandwidth_mib" in response.json()


@pytest.mark.parametrize("field", ["domain", "target_host"])
def test_a_huge_object_id_in_a_request_is_refused(api, operator, inventory, field):
    api.force_authenticate(operator)
    data = {"domain": inventory.domains.first().pk, "target_host": inventory.pk, "mode": "live", "dry_run": True}
    data[field] = 2**64
    response = api.post("/api/migrations/", data, format="json")
    assert response.status_code == 400
    assert field in response.json()


def test_page_lists_refuse_malformed_filters(client, viewer):
    client.force_login(viewer)
    assert_refused(client.get("/domains/?state=exploded"), "exploded")
    assert_refused(client.get("/migrations/?status=exploded"), "exploded")
