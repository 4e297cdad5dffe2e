"""kvmweb's processes, started for a benchmark the way the Procfile starts them.

``Stack`` owns a temporary directory (SQLite file, logs), a private
redis-server unless given a Redis URL, and any number of processes spawned
from the Procfile's lines (``web``: daphne on a free port; ``worker``: the RQ
worker), each in its own session so that a benchmark can SIGKILL one.
Settings come from the environment, which is set here before Django sets up.
"""

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from kvmweb.procfile import ROOT, procfile_argv
from tests.localservers import PrivateRedis, free_port, wait_port


class Stack:
    def __init__(self, redis_url=None, database_url=None, env=None):
        self.dir = Path(tempfile.mkdtemp(prefix="kvmweb-bench-"))
        self.procs = {}
        self.redis = None
        if redis_url is None:
            self.redis = PrivateRedis(self.dir)
            redis_url = self.redis.url
        self.redis_url = redis_url
        # Settings read these when Django sets up: before any kvmweb import.
        os.environ.update(
            {
                "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "kvmweb.settings"),
                "KVMWEB_VAR_DIR": str(self.dir),
                "DATABASE_URL": database_url or f"sqlite:///{self.dir / 'db.sqlite3'}",
                "REDIS_URL": redis_url,
                "KVMWEB_SYNC_INTERVAL": "0",
                "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
                "KVMWEB_LOG_LEVEL": os.environ.get("KVMWEB_LOG_LEVEL", "WARNING"),
                # The lab's hosts answer on plain TCP; test-driver hosts are files below this directory.
                "KVMWEB_ALLOW_TCP": "true",
                "KVMWEB_ALLOW_TEST_DRIVER": "true",
                "KVMWEB_TEST_DRIVER_DIR": str(self.dir),
                **(env or {}),
            }
        )

    def setup_django(self):
        """Django in this process, on the stack's database, migrated."""
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

    def spawn(self, name, argv, pass_fds=()):
        log = open(self.dir / f"{name}.log", "a")  # a process started again adds to its log
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=os.environ.copy(),
            pass_fds=pass_fds,
        )
        self.procs[name] = proc
        return proc

    def start_web(self, name="web"):
        """One daphne as the Procfile starts it, on a free port; returns the port."""
        port = free_port()
        proc = self.spawn(name, procfile_argv("web", port))
        wait_port(port, proc, "daphne")
        return port

    def start_webs(self, count, name="web"):
        """``count`` daphnes as the Procfile starts them, on one socket bound here and
        passed to each (``--fd``), as supervisord does for ``--webs``; returns the port."""
        import socket

        listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        port = listener.getsockname()[1]
        try:
            for i in range(count):
                argv = procfile_argv("web", fd=listener.fileno())
                self.spawn(f"{name}{i}", argv, pass_fds=(listener.fileno(),))
        finally:
            listener.close()  # the daphnes hold it now
        # The socket accepts before any daphne does: wait for an answer instead.
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=60).close()
        except urllib.error.HTTPError:
            pass  # an answer all the same
        for i in range(count):
            if self.procs[f"{name}{i}"].poll() is not None:
                raise RuntimeError(f"daphne {name}{i} exited: {self.log(f'{name}{i}')[-2000:]}")
        return port

    def start_worker(self, name="worker"):
        """One RQ worker as the Procfile starts it; waits until it has registered in Redis."""
        import time

        from redis import Redis
        from rq import Worker

        connection = Redis.from_url(self.redis_url)
        before = {w.name for w in Worker.all(connection=connection)}
        proc = self.spawn(name, procfile_argv("worker"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {proc.returncode}: {self.log(name)[-2000:]}")
            if {w.name for w in Worker.all(connection=connection)} - before:
                return proc
            time.sleep(0.1)
        raise RuntimeError("the worker did not register within 60 s")

    def kill(self, name, sig=signal.SIGKILL):
        proc = self.procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def log(self, name):
        return (self.dir / f"{name}.log").read_text(errors="replace")

    def stop(self, keep_dir=False):
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self.redis is not None:
            self.redis.stop()
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def session_cookie(user):
    """A logged-in session for ``user``: the cookie a browser would send to pages and sockets."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value
