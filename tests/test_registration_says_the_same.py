"""Registering a host does not tell open ports from closed ones (issue 21, finding 9).

A host's registration showed an SSH fingerprint, "could not fetch the SSH host
key" or a TLS error depending on what listened at the port, and answered a
closed port in 0.015 s but a filtered one in 3.1 s: a port scanner for whoever
may register hosts. Now every failure to reach a host says one thing (per
transport), and takes the same time.
"""

import re
import socket
import threading
import time

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


class Port:
    """closed (nothing listens), silent (accepts, never answers) or talking
    (answers something that is no sshd, TLS or libvirtd)."""

    def __init__(self, kind):
        self.kind = kind
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns = []
        if kind == "closed":
            self.sock.close()
        else:
            threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.kind == "talking":
                try:
                    conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
                    conn.close()
                except OSError:
                    pass

    def close(self):
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["ssh", "tls", "tcp"])
def test_every_failure_says_the_same_in_the_same_time(api, operator, settings, transport, monkeypatch):
    from hosts import sync

    monkeypatch.setattr(sync, "EVEN_FAILURE_SECONDS", None)  # the real rule, which the suite turns off
    settings.KVMWEB_CONNECT_TIMEOUT = 1
    api.force_authenticate(operator)
    answers = {}
    for kind in ("closed", "silent", "talking"):
        port = Port(kind)
        user = "root@" if transport == "ssh" else ""
        started = time.monotonic()
        response = api.post(
            "/api/hosts/",
            {"name": f"h-{kind}", "uri": f"qemu+{transport}://{user}127.0.0.1:{port.port}/system"},
            format="json",
        )
        took = time.monotonic() - started
        port.close()
        assert response.status_code == 201, response.content
        host = api.get(f"/api/hosts/{response.json()['id']}/").json()
        said = re.sub(r"port \d+", "port N", host["status_reason"])
        answers[kind] = (host["status"], said, host["status_detail"], host["ssh_offered_fingerprint"], took)
    shown = {kind: a[:4] for kind, a in answers.items()}
    assert len(set(shown.values())) == 1, shown
    status, said, detail, fingerprint = shown["closed"]
    assert status == "offline" and "Check that the host is up" in said and detail == "" and fingerprint == ""
    times = [a[4] for a in answers.values()]
    # Each takes twice the connect timeout and a second, whatever was there.
    assert all(2.9 < t < 3.6 for t in times), times
