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
        for path in (f"/ws/migrations/{migration.pk}/", "/ws/dashboard/", "/ws/evacuations/1/"):
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

        sockets = [
            socket(path, b"http://localhost", b"localhost", cookie)
            for path in (f"/ws/migrations/{migration.pk}/", "/ws/dashboard/")
        ]
        for ws in sockets:
            connected, _ = await ws.connect()
            assert connected
            await ws.receive_json_from(timeout=5)  # the full state
        response = await sync_to_async(client.post)("/accounts/logout/")
        assert response.status_code == 302
        for ws in sockets:
            closed = await ws.receive_output(timeout=5)
            assert closed == {"type": "websocket.close", "code": 4401}
            # As a browser answers a close: the consumer then ends inside this
            # event loop (left to the loop's shutdown, its channel-layer read
            # was cancelled midway and broke the next tests' sockets).
            await ws.disconnect()

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
