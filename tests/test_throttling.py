"""Guessing passwords and tokens is throttled (finding 6).

Forty wrong passwords in a row were all tried and the right one then worked;
the API never answered 429.
"""

import pytest
from django.test import override_settings

from hosts.models import Host


@pytest.mark.parametrize("login_url", ["/accounts/login/", "/admin/login/"])
def test_repeated_wrong_passwords_lock_the_login_with_429(client, owner, settings, login_url):
    codes = [
        client.post(login_url, {"username": owner.username, "password": "wrong"}).status_code
        for _ in range(settings.KVMWEB_LOGIN_FAILURE_LIMIT + 1)
    ]
    # The form again, with its error, until the limit is reached; then a wait
    # (core/logins.py; tests/test_login_limits.py shows how long).
    assert codes == [200] * settings.KVMWEB_LOGIN_FAILURE_LIMIT + [429]
    response = client.post(login_url, {"username": owner.username, "password": "pw-" + owner.username})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_right_password_before_the_limit_logs_in(client, owner, settings):
    for _ in range(settings.KVMWEB_LOGIN_FAILURE_LIMIT - 1):
        client.post("/accounts/login/", {"username": owner.username, "password": "wrong"})
    response = client.post("/accounts/login/", {"username": owner.username, "password": "pw-" + owner.username})
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(owner.pk)


def _rates(anon, user):
    from django.conf import settings

    return override_settings(
        REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"anon": anon, "user": user}}
    )


def test_the_api_answers_429_past_a_users_rate(api, viewer):
    from rest_framework.settings import api_settings
    from rest_framework.throttling import SimpleRateThrottle

    Host.objects.create(name="kvm01", uri="test:///default")
    with _rates("5/minute", "5/minute"):
        # DRF's throttles read their rates once, at import; read them again.
        SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
        try:
            api.force_authenticate(viewer)
            codes = [api.get("/api/hosts/").status_code for _ in range(6)]
        finally:
            SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
    assert codes == [200] * 5 + [429]


def test_wrong_tokens_meet_the_anonymous_rate(client, operator):
    from rest_framework.settings import api_settings
    from rest_framework.throttling import SimpleRateThrottle

    with _rates("5/minute", "1000/minute"):
        SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
        try:
            codes = [client.get("/api/hosts/", HTTP_AUTHORIZATION=f"Token guess{i:04d}").status_code for i in range(7)]
        finally:
            SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
    assert codes == [401] * 5 + [429, 429]
