"""Servers that tests and benchmarks start on loopback for themselves."""

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, what="the server", timeout=30):
    """Until something listens on 127.0.0.1:port; RuntimeError if ``proc`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.3).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


@contextlib.contextmanager
def daphne_on_free_port(env):
    """A real daphne serving kvmweb on a free loopback port, with ``env``;
    yields (process, port) and stops it after (killed if it will not stop)."""
    import sys

    root = Path(__file__).resolve().parent.parent
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port), "kvmweb.asgi:application"],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc, "daphne", timeout=60)
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # daphne waits for the application instances it still runs
            proc.kill()
            proc.wait(10)


class PrivateRedis:
    """A redis-server of the caller's own, never the demo's: nothing saved to
    disk, and a password (in a private config file, not on the command line),
    as kvmweb's Redis should have."""

    def __init__(self, directory):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed: `make test` (or `make demo`) installs it.")
        self.directory = directory
        self.port = free_port()
        self.password = secrets.token_urlsafe(24)
        self.start()

    def start(self):
        conf = os.path.join(self.directory, "redis.conf")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"port {self.port}\nbind 127.0.0.1\nrequirepass {self.password}\n")
            f.write(f'save ""\nappendonly no\ndir {self.directory}\n')
        self.proc = subprocess.Popen(
            [self.binary, conf],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(self.port, self.proc, "redis-server", timeout=10)
        except RuntimeError:
            self.stop()
            raise

    @property
    def url(self):
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)

    def restart(self):
        """Stop and start again on the same port: everything it held is gone."""
        self.stop()
        self.start()


class PrivatePostgres:
    """A PostgreSQL cluster of the caller's own (Debian's binaries, run as ``postgres``), on a free port.

    Needs root. Not the system's cluster, so a caller may stop and restart it
    without disturbing anyone. ``url`` names database ``kvmweb``, trust auth on loopback.
    """

    def __init__(self):
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
        if not versions or os.geteuid() != 0:
            raise RuntimeError("a private PostgreSQL needs root and Debian's postgresql (install-system-deps.sh ci)")
        self.bin = versions[-1].parent
        # Not under a 0700 directory of root's: the server runs as postgres.
        self.dir = Path(tempfile.mkdtemp(prefix="kvmweb-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        self._as_postgres("initdb", "-D", self.dir / "data", "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.start()
        self._as_postgres("createdb", "-h", "127.0.0.1", "-p", self.port, "-U", "postgres", "kvmweb")

    def _as_postgres(self, program, *args):
        argv = ["runuser", "-u", "postgres", "--", str(self.bin / program), *map(str, args)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if done.returncode:
            raise RuntimeError(f"{program} failed: {done.stderr or done.stdout}")

    @property
    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/kvmweb"

    def start(self):
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._as_postgres("pg_ctl", "-D", self.dir / "data", "-l", self.dir / "log", "-o", options, "-w", "start")

    def stop(self, mode="fast"):
        self._as_postgres("pg_ctl", "-D", self.dir / "data", "-m", mode, "-w", "stop")

    def restart(self):
        """A fast restart: every open connection is cut, as when the server restarts for real."""
        self.stop()
        self.start()

    def remove(self):
        try:
            self.stop("immediate")
        except RuntimeError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
