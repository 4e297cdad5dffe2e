"""A worker pool slot keeps its libvirt connections between pieces of work:
the next migration on a host does not log in again; a connection that no
longer answers is never handed out; a process that does not ask keeps none."""

import pytest

from hosts.libvirt import connection
from hosts.libvirt.connection import close_kept, keep_connections, open_host, open_hosts
from tests.testdriver import write_host


@pytest.fixture
def uri(tmp_path):
    return write_host(tmp_path, "kvm01", count=1)


@pytest.fixture
def keeping():
    keep_connections()
    yield
    keep_connections(False)


def test_a_keeping_process_uses_the_same_connection_for_the_next_piece_of_work(uri, keeping):
    with open_host(uri) as first:
        used = first._conn
        assert first.hostname()
    with open_host(uri) as second:
        assert second._conn is used  # not logged in again
        assert second.hostname()


def test_one_piece_of_work_never_shares_a_connection(uri, keeping):
    with open_hosts(uri, uri) as (a, b):
        assert a._conn is not b._conn
    with open_host(uri) as c, open_host(uri) as d:
        assert c._conn is not d._conn
        assert {c._conn, d._conn} == {a._conn, b._conn}


def test_a_kept_connection_that_no_longer_answers_is_not_handed_out(uri, keeping):
    with open_host(uri) as first:
        dead = first._conn
    dead.close()  # as if the host's libvirtd had restarted

    with open_host(uri) as second:
        assert second._conn is not dead
        assert second.hostname()


def test_connections_unused_for_long_are_closed_not_reused(uri, keeping, monkeypatch):
    with open_host(uri) as first:
        old = first._conn
    monkeypatch.setattr(connection, "KEEP_IDLE_SECONDS", -1)
    with open_host(uri) as second:
        assert second._conn is not old
    assert _closed(old)


def test_a_process_that_does_not_keep_closes_after_each_piece_of_work(uri):
    close_kept()
    with open_host(uri) as first:
        used = first._conn
    assert _closed(used)
    with open_host(uri) as second:
        assert second._conn is not used


def _closed(conn):
    import libvirt

    try:
        conn.getLibVersion()
    except libvirt.libvirtError:
        return True
    return False
