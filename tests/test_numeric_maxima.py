"""Every number a client sends has a maximum: never a 500 (issue 21, finding 11).

``POST /api/hosts/{id}/maintenance/ {"bandwidth_mib": 10**29}`` overflowed the
database (OverflowError, 500); a host's allocation ratio of 1e308 overflowed
the capacity arithmetic, and 10**29 was stored as a ratio.
"""

import pytest

pytestmark = pytest.mark.django_db

HUGE = [10**29, 2**63, 1e308]


@pytest.fixture
def as_operator(api, client, operator):
    api.force_authenticate(operator)
    client.force_login(operator)
    # A 500 is an answer here, not an exception in the test.
    api.raise_request_exception = False
    client.raise_request_exception = False
    return api


@pytest.mark.parametrize("value", HUGE)
def test_the_maintenance_bandwidth_has_a_maximum(as_operator, testdriver_hosts, value):
    kvm01, _ = testdriver_hosts
    for body in ({"bandwidth_mib": value, "allow_partial": True}, {"bandwidth_mib": value, "dry_run": True}):
        response = as_operator.post(f"/api/hosts/{kvm01.pk}/maintenance/", body, format="json")
        assert response.status_code == 400, response.content
        assert "bandwidth_mib" in response.json()
    kvm01.refresh_from_db()
    assert not kvm01.maintenance


@pytest.mark.parametrize("field", ["max_incoming", "max_outgoing", "memory_reserved_mib", "memory_ratio", "cpu_ratio"])
@pytest.mark.parametrize("value", HUGE)
def test_host_settings_have_maxima(as_operator, testdriver_hosts, field, value):
    _, kvm02 = testdriver_hosts
    response = as_operator.patch(f"/api/hosts/{kvm02.pk}/", {field: value}, format="json")
    assert response.status_code == 400, response.content
    message = response.json()[field][0]
    assert "less than or equal to" in message or "A valid integer is required" in message
    # The host still reads as before.
    assert as_operator.get(f"/api/hosts/{kvm02.pk}/").status_code == 200


def test_a_sensible_setting_is_still_taken(as_operator, testdriver_hosts):
    _, kvm02 = testdriver_hosts
    response = as_operator.patch(f"/api/hosts/{kvm02.pk}/", {"cpu_ratio": 8.0, "max_incoming": 4}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["cpu_ratio"] == 8.0


@pytest.mark.parametrize("value", HUGE)
def test_migration_requests_have_maxima(as_operator, testdriver_hosts, value):
    kvm01, kvm02 = testdriver_hosts
    dom = kvm01.domains.first()
    base = {"domain": dom.pk, "target_host": kvm02.pk, "mode": "live", "dry_run": True}
    for field in ("domain", "target_host", "bandwidth_mib", "shutdown_timeout"):
        response = as_operator.post("/api/migrations/", {**base, field: value}, format="json")
        assert response.status_code == 400, (field, response.content)


@pytest.mark.parametrize(
    "url",
    [
        "/api/audit/?limit={}",
        "/api/audit/?offset={}",
        "/api/domains/?offset={}",
        "/api/domains/?limit={}",
        "/api/audit/?migration={}",
        "/api/domains/?host_id={}",
        "/api/hosts/{}/",
        "/api/evacuations/{}/",
        "/audit/?page={}",
        "/migrations/{}/",
    ],
)
def test_numbers_in_urls_never_make_a_500(as_operator, client, testdriver_hosts, url):
    for value in (10**29, 2**63):
        target = url.format(value)
        response = (client if not target.startswith("/api/") else as_operator).get(target)
        assert response.status_code < 500, (target, response.status_code)


def test_the_admin_host_form_refuses_a_huge_ratio(client, owner, testdriver_hosts):
    _, kvm02 = testdriver_hosts
    client.force_login(owner)
    client.raise_request_exception = False
    response = client.post(
        f"/admin/hosts/host/{kvm02.pk}/change/",
        {"name": kvm02.name, "uri": kvm02.uri, "max_incoming": 2, "max_outgoing": 2, "memory_ratio": "1e308"},
    )
    assert response.status_code == 200  # the form again, with the error
    assert "less than or equal to 10" in response.content.decode()
