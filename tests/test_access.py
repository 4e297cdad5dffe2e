"""Every page and API call needs login, and a role; only operators change things."""

import pytest

from hosts.models import Host
from tests.testdriver import write_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def inventory(tmp_path):
    from hosts.sync import sync_host

    host = Host.objects.create(name="kvm01", uri=write_host(tmp_path, "kvm01", count=2))
    sync_host(host)
    return host


def page_urls(host):
    domain = host.domains.first()
    return ["/", f"/hosts/{host.name}/", "/domains/", f"/domains/{domain.uuid}/", "/cluster/balance/"]


def api_urls(host):
    return ["/api/", "/api/hosts/", f"/api/hosts/{host.pk}/", "/api/domains/", "/api/schema/"]


def test_every_page_sends_an_anonymous_visitor_to_the_login(client, inventory):
    for url in page_urls(inventory):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/"), url


def test_every_api_call_refuses_an_anonymous_caller(client, inventory):
    for url in api_urls(inventory):
        assert client.get(url).status_code in (401, 403), url
    assert client.post(f"/api/hosts/{inventory.pk}/sync/").status_code in (401, 403)
    assert client.post("/api/hosts/", {"name": "x", "uri": "test:///default"}).status_code in (401, 403)


def test_a_logged_in_user_without_a_role_is_told_to_ask_for_one(client, outsider, inventory):
    client.force_login(outsider)
    for url in page_urls(inventory) + api_urls(inventory):
        response = client.get(url)
        assert response.status_code == 403, url
        assert "no role in kvmweb yet" in response.content.decode(), url


def test_viewers_see_every_page(client, viewer, inventory):
    client.force_login(viewer)
    for url in page_urls(inventory) + api_urls(inventory):
        assert client.get(url).status_code == 200, url


def test_the_login_page_itself_is_reachable(client):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert b"Log in to kvmweb" in response.content
