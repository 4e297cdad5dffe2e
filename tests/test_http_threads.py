"""HTTP through kvmweb.asgi: Django's synchronous handler on a fixed pool of threads.

Under load, Django's own ASGI handler gave every request a thread of its own
(a hundred threads in one web process, each with its own database connection,
all fighting for the GIL with the event loop that carries the WebSockets).
"""

import asyncio
import threading

import pytest
from channels.testing import HttpCommunicator
from django.conf import settings
from django.core.signals import request_started
from django.db import connection, connections

from tests.test_consumers import cookie_for, run

pytestmark = pytest.mark.django_db(transaction=True)

HOST = (b"host", b"127.0.0.1:8000")


def get(path, *headers):
    from kvmweb.asgi import application

    return HttpCommunicator(application, "GET", path, headers=[HOST, *headers]).get_response(timeout=30)


@pytest.fixture
def kept_connections():
    """Connections kept as kvmweb's settings keep them (the suite closes them
    after each request), closed in every thread of the pool afterwards."""
    from kvmweb.asgi import django_http_app

    kept = connections["default"].settings_dict
    before = kept["CONN_MAX_AGE"]
    kept["CONN_MAX_AGE"] = 60
    yield
    kept["CONN_MAX_AGE"] = before
    # One task per thread, each waiting for all the others: every thread runs one.
    everyone = threading.Barrier(settings.KVMWEB_HTTP_THREADS)

    def close():
        everyone.wait(timeout=10)
        connections.close_all()

    for done in [django_http_app.executor.submit(close) for _ in range(settings.KVMWEB_HTTP_THREADS)]:
        done.result(timeout=20)


def test_requests_share_a_fixed_pool_of_threads_and_their_database_connections(kept_connections):
    threads, connections = set(), set()

    def seen(**kwargs):
        threads.add(threading.get_ident())

    def query(**kwargs):
        # The connection a request's queries use, after the request's own check of it.
        connection.ensure_connection()
        connections.add(id(connection.connection))

    request_started.connect(seen, dispatch_uid="test-threads")
    request_started.connect(query, dispatch_uid="test-connections")
    try:

        async def scenario():
            for _ in range(3):
                responses = await asyncio.gather(*(get("/accounts/login/") for _ in range(20)))
                assert {r["status"] for r in responses} == {200}

        run(scenario)
    finally:
        request_started.disconnect(dispatch_uid="test-threads")
        request_started.disconnect(dispatch_uid="test-connections")
    # 60 requests, 20 at a time: no more threads than the pool has, each
    # keeping its connection from one request to the next.
    assert 1 <= len(threads) <= settings.KVMWEB_HTTP_THREADS
    assert len(connections) <= settings.KVMWEB_HTTP_THREADS


def test_static_files_and_a_streamed_export_come_through_whole(client, viewer):
    cookie = cookie_for(client, viewer)

    async def scenario():
        css = await get("/static/bars.css")
        assert css["status"] == 200
        assert b".bar" in css["body"]
        export = await get("/audit/export.csv", cookie)
        assert export["status"] == 200
        assert dict(export["headers"])[b"content-type"].startswith(b"text/csv")
        assert export["body"].splitlines()[0].startswith(b"at,user,action,")
        denied = await get("/audit/export.csv")
        assert denied["status"] == 302  # no session: to the login page

    run(scenario)
