"""The audit CSV export is bounded (issue 21, finding 4).

With 150k audit rows, four slow downloads (20 kB/s) of the streamed export
held the HTTP threads: the dashboard timed out at 30 s and daphne grew from
140 to 407 MB. An export is now at most AUDIT_EXPORT_MAX_ROWS rows made in at
most AUDIT_EXPORT_SECONDS, made in full before it is sent; older entries come
from the next part.
"""

import csv
import io
import os
import socket
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from migrations_app import views
from migrations_app.models import AuditEntry
from tests.conftest import database_url_for_subprocess
from tests.localservers import daphne_on_free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def make_log(count, same_moment_every=1):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    AuditEntry.objects.bulk_create(
        AuditEntry(
            action="check",
            message=f"entry {i:06d}",
            at=start + timedelta(seconds=i // same_moment_every),
            domain_name=f"vm{i % 7}",
        )
        for i in range(count)
    )


def rows(response):
    assert response.status_code == 200
    return list(csv.reader(io.StringIO(response.content.decode())))


@pytest.mark.django_db
def test_a_long_log_comes_in_parts_that_together_hold_every_entry_once(client, viewer, monkeypatch):
    monkeypatch.setattr(views, "AUDIT_EXPORT_MAX_ROWS", 50)
    make_log(120, same_moment_every=3)  # entries sharing a moment across a cut
    client.force_login(viewer)
    url, messages, parts = "/audit/export.csv?action=check", [], 0
    while url:
        response = client.get(url)
        table = rows(response)
        parts += 1
        link = response.get("Link")
        if link:
            url = link[1 : link.index(">")]
            assert "action=check" in url  # the filters carry on
            assert table[-1][-1].startswith("Cut after 50 entries: the older ones are in /audit/export.csv?")
            table = table[:-1]
        else:
            url = None
        messages += [row[8] for row in table[1:]]
    assert parts == 3
    assert messages == [f"entry {i:06d}" for i in reversed(range(120))]


@pytest.mark.django_db
def test_an_export_stops_at_its_time_limit(client, viewer, monkeypatch):
    monkeypatch.setattr(views, "AUDIT_EXPORT_SECONDS", 0.0)
    make_log(30)
    client.force_login(viewer)
    response = client.get("/audit/export.csv")
    table = rows(response)
    assert 'rel="next"' in response["Link"]
    assert len(table) < 1 + 30 + 1


@pytest.mark.django_db
def test_a_malformed_part_is_refused_plainly(client, viewer):
    client.force_login(viewer)
    for value in ("abc", "9" * 40, "123456"):
        response = client.get(f"/audit/export.csv?before={value}")
        assert response.status_code == 400
        assert "is not the id of an audit entry" in response.content.decode()


@pytest.fixture
def daphne_one_thread(redis_url, transactional_db):
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "REDIS_URL": redis_url,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "KVMWEB_LOG_LEVEL": "WARNING",
        "KVMWEB_HTTP_THREADS": "1",
    }
    with daphne_on_free_port(env) as (proc, port):
        yield proc, port


def start_slow_download(port, cookie):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(f"GET /audit/export.csv HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: sessionid={cookie}\r\n\r\n".encode())
    s.recv(1024)  # it has started; the rest is read never (a client slower than any)
    return s


@pytest.mark.processes
def test_slow_downloads_do_not_hold_the_http_threads(daphne_one_thread, client, viewer):
    proc, port = daphne_one_thread
    make_log(60_000)
    client.force_login(viewer)
    cookie = client.cookies["sessionid"].value
    slow = [start_slow_download(port, cookie) for _ in range(2)]
    try:
        started = time.monotonic()
        page = socket.create_connection(("127.0.0.1", port))
        page.settimeout(30)
        page.sendall(b"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = page.recv(100)
        took = time.monotonic() - started
        page.close()
    finally:
        for s in slow:
            s.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer
    # Before: 8.9 s here (each streamed export held the one thread for as long
    # as its client took, and daphne could not even stop). After: 0.03 s.
    assert took < 3, f"a page waited {took:.1f} s behind two slow downloads"
