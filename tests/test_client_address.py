"""X-Forwarded-For is believed only from a declared proxy (issue 21, finding 2).

61 requests with a bad token and ``X-Forwarded-For: 127.0.0.5`` locked the real
127.0.0.5 out (429 with a valid token); rotating the header escaped the limit.
"""

import ipaddress

import pytest
from django.test import RequestFactory, override_settings

from core.clientaddr import client_address

pytestmark = pytest.mark.django_db


def _proxies(*cidrs):
    return override_settings(KVMWEB_TRUSTED_PROXIES=[ipaddress.ip_network(c) for c in cidrs])


def _request(remote, forwarded=None):
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **extra)


def test_without_a_trusted_proxy_the_header_is_ignored():
    assert client_address(_request("192.0.2.7", "127.0.0.5")) == "192.0.2.7"


def test_behind_a_trusted_proxy_the_client_is_the_last_address_it_did_not_write_itself():
    with _proxies("127.0.0.1/32", "10.0.0.0/8"):
        # What the client wrote itself (left) is not believed; what the proxies appended is.
        assert client_address(_request("127.0.0.1", "127.0.0.5, 198.51.100.9")) == "198.51.100.9"
        assert client_address(_request("127.0.0.1", "198.51.100.9, 10.1.2.3")) == "198.51.100.9"
        assert client_address(_request("127.0.0.1", "[2001:db8::1]:4711")) == "2001:db8::1"
        # Garbage where a proxy's entry should be: the nearest proxy is the client.
        assert client_address(_request("127.0.0.1", "198.51.100.9, not-an-address")) == "127.0.0.1"
        assert client_address(_request("127.0.0.1")) == "127.0.0.1"
        # A connection that does not come from a trusted proxy: its own address.
        assert client_address(_request("192.0.2.7", "198.51.100.9")) == "192.0.2.7"


def _anon_rate(rate):
    from django.conf import settings

    return override_settings(
        REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"anon": rate, "user": "1000/minute"}}
    )


@pytest.fixture
def five_per_minute():
    from rest_framework.settings import api_settings
    from rest_framework.throttling import SimpleRateThrottle

    with _anon_rate("5/minute"):
        SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
        yield
    SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES


def _token(user):
    from knox.models import AuthToken

    return AuthToken.objects.create(user)[1]


def test_a_forged_header_does_not_lock_out_the_address_it_names(client, viewer, five_per_minute):
    token = _token(viewer)
    for i in range(7):
        client.get(
            "/api/hosts/",
            HTTP_AUTHORIZATION=f"Token guess{i}",
            REMOTE_ADDR="192.0.2.66",
            HTTP_X_FORWARDED_FOR="127.0.0.5",
        )
    response = client.get("/api/hosts/", HTTP_AUTHORIZATION=f"Token {token}", REMOTE_ADDR="127.0.0.5")
    assert response.status_code == 200


def test_rotating_the_header_does_not_escape_the_limit(client, five_per_minute):
    codes = [
        client.get(
            "/api/hosts/",
            HTTP_AUTHORIZATION=f"Token guess{i}",
            REMOTE_ADDR="192.0.2.66",
            HTTP_X_FORWARDED_FOR=f"10.0.0.{i}",
        ).status_code
        for i in range(10)
    ]
    assert codes == [401] * 5 + [429] * 5


def test_behind_a_declared_proxy_each_client_has_its_own_limit(client, viewer, five_per_minute):
    token = _token(viewer)
    with _proxies("127.0.0.1/32"):
        for i in range(7):
            client.get(
                "/api/hosts/",
                HTTP_AUTHORIZATION=f"Token guess{i}",
                REMOTE_ADDR="127.0.0.1",
                HTTP_X_FORWARDED_FOR="198.51.100.1",
            )
        assert (
            client.get(
                "/api/hosts/",
                HTTP_AUTHORIZATION=f"Token {token}",
                REMOTE_ADDR="127.0.0.1",
                HTTP_X_FORWARDED_FOR="198.51.100.1",
            ).status_code
            == 429
        )
        assert (
            client.get(
                "/api/hosts/",
                HTTP_AUTHORIZATION=f"Token {token}",
                REMOTE_ADDR="127.0.0.1",
                HTTP_X_FORWARDED_FOR="198.51.100.2",
            ).status_code
            == 200
        )
