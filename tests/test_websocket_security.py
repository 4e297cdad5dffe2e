"""WebSockets: exact origin, closed at logout, deaf to client frames (finding 8)."""

import logging

import pytest
from channels.testing import WebsocketCommunicator

from tests.test_consumers import cookie_for, migration, run  # noqa: F401  (migration: a fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def socket(path, origin, host, *headers):
    from kvmweb.asgi import application

    return WebsocketCommunicator(application, path, headers=[(b"origin", origin), (b"host", host), *headers])


@pytest.mark.parametrize(
    "origin, host",
    [
        (b"http://127.0.0.1:9999", b"127.0.0.1:8000"),  # another port of the same machine
        (b"https://127.0.0.1:8000", b"127.0.0.1:8000"),  # another scheme
        (b"http://127.0.0.1", b"127.0.0.1:8000"),  # the default port is another port
        (b"http://evil.example:8000", b"evil.example:8000"),  # a host not in ALLOWED_HOSTS
        (b"null", b"127.0.0.1:8000"),
    ],
)
def test_a_socket_from_another_origin_is_refused(client, migration, viewer, origin, host):  # noqa: F811
    cookie = cookie_for(client, viewer)

    async def scenario():
        paths = (f"/ws/migrations/{migration.pk}/", "/ws/dashboard/", f"/ws/domains/{migration.domain_id}/")
        for path in (*paths, "/ws/evacuations/1/"):
            connected, _ = await socket(path, origin, host, cookie).connect()
            assert not connected, (path, origin)

    run(scenario)


def test_a_socket_from_the_sites_own_origin_is_let_in(client, migration, viewer):  # noqa: F811
    cookie = cookie_for(client, viewer)

    async def scenario():
        ws = socket("/ws/dashboard/", b"http://127.0.0.1:8000", b"127.0.0.1:8000", cookie)
        connected, _ = await ws.connect()
        assert connected
        await ws.disconnect()

    run(scenario)


def test_behind_a_tls_proxy_the_https_origin_is_the_sites_own(client, migration, viewer, settings):  # noqa: F811
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    cookie = cookie_for(client, viewer)

    async def scenario():
        proto = (b"x-forwarded-proto", b"https")
        ws = socket("/ws/dashboard/", b"https://localhost", b"localhost", cookie, proto)
        connected, _ = await ws.connect()
        assert connected
        await ws.disconnect()
        connected, _ = await socket("/ws/dashboard/", b"http://localhost", b"localhost", cookie, proto).connect()
        assert not connected

    run(scenario)


def test_logging_out_closes_the_sessions_sockets(client, migration, viewer):  # noqa: F811
    cookie = cookie_for(client, viewer)

    async def scenario():
        from asgiref.sync import sync_to_async

        sockets = open_sockets(cookie, migration)
        await connect_all(sockets)
        response = await sync_to_async(client.post)("/accounts/logout/")
        assert response.status_code == 302
        await assert_closed(sockets)

    run(scenario)


def test_a_malformed_frame_is_ignored_and_the_socket_stays(client, migration, viewer, caplog):  # noqa: F811
    cookie = cookie_for(client, viewer)

    async def scenario():
        ws = socket(f"/ws/migrations/{migration.pk}/", b"http://localhost", b"localhost", cookie)
        connected, _ = await ws.connect()
        assert connected
        await ws.receive_json_from(timeout=5)
        for frame in ("{not json", "[1, 2", '{"type": "migration.update"}'):
            await ws.send_to(text_data=frame)
        await ws.send_to(bytes_data=b"\x00\xff")
        assert await ws.receive_nothing(timeout=0.5)
        await ws.disconnect()

    with caplog.at_level(logging.DEBUG):
        run(scenario)
    assert not [r for r in caplog.records if r.exc_info], "a client frame caused a traceback"


def open_sockets(cookie, migration):  # noqa: F811
    return [
        socket(path, b"http://localhost", b"localhost", cookie)
        for path in (f"/ws/migrations/{migration.pk}/", "/ws/dashboard/", f"/ws/domains/{migration.domain_id}/")
    ]


async def connect_all(sockets):
    for ws in sockets:
        connected, _ = await ws.connect()
        assert connected
        await ws.receive_json_from(timeout=5)  # the full state


async def assert_closed(sockets, timeout=5):
    for ws in sockets:
        closed = await ws.receive_output(timeout=timeout)
        assert closed == {"type": "websocket.close", "code": 4401}
        # As a browser answers a close: the consumer then ends inside this
        # event loop (left to the loop's shutdown, its channel-layer read
        # was cancelled midway and broke the next tests' sockets).
        await ws.disconnect()


@pytest.mark.parametrize(
    "change", ["password", "deactivated", "removed", "role taken away", "taken out of the group", "group deleted"]
)
def test_a_change_to_the_user_closes_their_sockets_at_once(client, migration, viewer, operator, settings, change):  # noqa: F811
    settings.KVMWEB_SOCKET_RECHECK_SECONDS = 3600  # only the change itself can close them
    cookie = cookie_for(client, viewer)
    from django.test import Client

    other_cookie = cookie_for(Client(), operator)

    def change_the_user():
        if change == "password":
            viewer.set_password("a new password, set elsewhere")
            viewer.save()
        elif change == "deactivated":
            viewer.is_active = False
            viewer.save()
        elif change == "role taken away":  # issue 21, finding 8
            viewer.groups.clear()
        elif change == "taken out of the group":
            from django.contrib.auth.models import Group

            Group.objects.get(name="viewers").user_set.remove(viewer)
        elif change == "group deleted":
            from django.contrib.auth.models import Group

            Group.objects.get(name="viewers").delete()
        else:
            viewer.delete()

    async def scenario():
        from asgiref.sync import sync_to_async

        sockets = open_sockets(cookie, migration)
        others = open_sockets(other_cookie, migration)
        await connect_all(sockets + others)
        # A login saves last_login: that alone closes nothing.
        await sync_to_async(Client().force_login)(viewer)
        assert await sockets[1].receive_nothing(timeout=0.5)
        await sync_to_async(change_the_user)()
        await assert_closed(sockets)
        # Another user's sockets stay.
        assert await others[1].receive_nothing(timeout=0.5)
        for ws in others:
            await ws.disconnect()

    run(scenario)


def test_an_expired_session_closes_its_sockets_within_the_recheck_interval(client, migration, viewer, settings):  # noqa: F811
    settings.KVMWEB_SOCKET_RECHECK_SECONDS = 0.3
    cookie = cookie_for(client, viewer)
    key = client.cookies["sessionid"].value

    def expire():
        from django.contrib.sessions.models import Session
        from django.utils import timezone

        Session.objects.filter(session_key=key).update(expire_date=timezone.now())

    async def scenario():
        from asgiref.sync import sync_to_async

        sockets = open_sockets(cookie, migration)
        await connect_all(sockets)
        # Still good: several checks pass and nothing closes.
        assert await sockets[1].receive_nothing(timeout=1.0)
        await sync_to_async(expire)()
        await assert_closed(sockets, timeout=3)

    run(scenario)


def test_a_role_taken_away_behind_kvmwebs_back_closes_sockets_at_the_recheck(client, migration, viewer, settings):  # noqa: F811
    """Issue 21, finding 8: the periodic check asks for a role too (here the
    membership is deleted without the signal that closes sockets at once)."""
    settings.KVMWEB_SOCKET_RECHECK_SECONDS = 0.3
    cookie = cookie_for(client, viewer)

    def take_the_role_away():
        from django.contrib.auth.models import User

        User.groups.through.objects.filter(user=viewer).delete()

    async def scenario():
        from asgiref.sync import sync_to_async

        sockets = open_sockets(cookie, migration)
        await connect_all(sockets)
        assert await sockets[1].receive_nothing(timeout=1.0)
        await sync_to_async(take_the_role_away)()
        await assert_closed(sockets, timeout=3)

    run(scenario)
