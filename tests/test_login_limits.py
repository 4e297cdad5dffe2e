"""Login limits that cannot be aimed at someone else (issue 21, finding 3).

Behind the documented proxy every client had the proxy's address: five wrong
passwords from anyone locked the admin out for 15 minutes, renewed by every
further try; one password tried across many user names was never limited; and
a dozen anonymous logins at once (PBKDF2 each) held every HTTP thread.
core/logins.py says the rule that replaced django-axes.

Measured on a real daphne (3 HTTP threads, Django's PBKDF2), a viewer's
dashboard while 12 clients post wrong passwords as fast as they are answered:
before, median 2.2 s, max 3.4 s (alone: 0.01 s); after, median 0.045 s, max
0.13 s, the logins answered 429 while another password is being checked.
"""

import ipaddress

import pytest
from django.test import override_settings

from core import logins

pytestmark = pytest.mark.django_db

PROXY = "127.0.0.1"


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def time(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(logins, "time", fake)
    return fake


@pytest.fixture
def behind_the_proxy():
    with override_settings(KVMWEB_TRUSTED_PROXIES=[ipaddress.ip_network(PROXY)]):
        yield


def login(client, username, password, client_address):
    return client.post(
        "/accounts/login/",
        {"username": username, "password": password},
        REMOTE_ADDR=PROXY,
        HTTP_X_FORWARDED_FOR=client_address,
    )


def test_wrong_passwords_from_anyone_only_delay_the_owner(client, owner, settings, clock, behind_the_proxy):
    attacker, at_home = "203.0.113.5", "198.51.100.7"
    limit = settings.KVMWEB_LOGIN_FAILURE_LIMIT
    codes = [login(client, owner.username, "wrong", attacker).status_code for _ in range(limit)]
    assert codes == [200] * limit
    # Tries during the delay are refused without looking at the password, and
    # are not counted: hammering does not make the wait longer.
    refused = [login(client, owner.username, "wrong", attacker) for _ in range(30)]
    assert {r.status_code for r in refused} == {429}
    assert refused[-1]["Retry-After"] == "1"
    assert "Wait 1 seconds, then try again" in refused[-1].content.decode()

    response = login(client, owner.username, "pw-" + owner.username, at_home)
    assert response.status_code == 429
    clock.now += 1
    response = login(client, owner.username, "pw-" + owner.username, at_home)
    assert response.status_code == 302, response.content


def test_however_long_someone_guesses_the_owner_waits_a_minute_at_most(
    client, owner, settings, clock, behind_the_proxy
):
    # A patient guesser, from ever new addresses, one try each time it is let in.
    for i in range(40):
        login(client, owner.username, "wrong", f"203.0.113.{i + 1}")
        clock.now += 61
    login(client, owner.username, "wrong", "203.0.114.1")
    assert login(client, owner.username, "pw-" + owner.username, "198.51.100.7").status_code == 429
    clock.now += 60
    assert login(client, owner.username, "pw-" + owner.username, "198.51.100.7").status_code == 302


def test_one_password_across_many_user_names_is_limited_per_address(client, owner, settings, clock, behind_the_proxy):
    sprayer = "203.0.113.9"
    tries = settings.KVMWEB_LOGIN_FAILURE_LIMIT * logins.ADDRESS_FACTOR
    codes = [login(client, f"user{i}", "Winter2026!", sprayer).status_code for i in range(tries)]
    assert codes == [200] * tries
    assert login(client, "user-next", "Winter2026!", sprayer).status_code == 429
    # Only that address waits.
    assert login(client, owner.username, "pw-" + owner.username, "198.51.100.7").status_code == 302


def test_the_forwarded_header_of_a_client_that_is_no_proxy_changes_nothing(client, owner, settings, clock):
    limit = settings.KVMWEB_LOGIN_FAILURE_LIMIT * logins.ADDRESS_FACTOR
    for i in range(limit):
        client.post(
            "/accounts/login/",
            {"username": f"user{i}", "password": "x"},
            REMOTE_ADDR="192.0.2.50",
            HTTP_X_FORWARDED_FOR=f"10.0.0.{i}",
        )
    response = client.post(
        "/accounts/login/",
        {"username": "more", "password": "x"},
        REMOTE_ADDR="192.0.2.50",
        HTTP_X_FORWARDED_FOR="10.9.9.9",
    )
    assert response.status_code == 429


def test_a_login_while_another_password_is_being_checked_is_answered_at_once(client, owner):
    """At most one password check at a time per web process: a crowd of
    anonymous logins holds one HTTP thread, not all of them."""
    assert logins._hashing.acquire(blocking=False)
    try:
        response = client.post("/accounts/login/", {"username": owner.username, "password": "pw-" + owner.username})
    finally:
        logins._hashing.release()
    assert response.status_code == 429
    assert response["Retry-After"] == "1"
    assert "checking other logins" in response.content.decode()
    # Not counted as a wrong password.
    response = client.post("/accounts/login/", {"username": owner.username, "password": "pw-" + owner.username})
    assert response.status_code == 302
