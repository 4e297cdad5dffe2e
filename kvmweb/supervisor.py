"""The demo's supervisor: supervisord's configuration, written from the Procfile.

    python -m kvmweb.supervisor redis VAR_DIR [--port 6379]     # prints the demo Redis's URL
    python -m kvmweb.supervisor conf VAR_DIR [--bind 127.0.0.1] [--port 8000] [--with-redis] [--webs 1]

Every Procfile line (web, worker, and any line added later) becomes a program
that supervisord restarts when it dies; with ``--with-redis``, Redis too: the
demo's own, on loopback, requiring a password generated once. Its URL, with
the password, is kept in VAR_DIR/redis-url (kvmweb's settings read it when
REDIS_URL is not set) and the password in VAR_DIR/redis.conf, never on a
command line. The programs inherit supervisord's environment (REDIS_URL,
KVMWEB_*), so no setting is copied into the file. Everything supervisord
writes stays in VAR_DIR, private: umask 077 for it and its programs, its
control socket 0700.
"""

import argparse
import os
import secrets
import shlex
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from kvmweb.procfile import ROOT, procfile, procfile_argv

# A program that stops within this many seconds of starting counts as failed
# to start; supervisord tries again up to START_RETRIES times, then gives up
# (FATAL in `make status`). A program that ran longer is restarted every time.
START_SECONDS = 2
START_RETRIES = 10


def _escape(value: object) -> str:
    # supervisord expands %(name)s in values: keep a literal % literal.
    return str(value).replace("%", "%%")


def _command(argv: list[str]) -> str:
    return _escape(shlex.join(argv))


class _Expanded(str):
    """A value written as it is: supervisord expands its %(...)s."""


def _private_write(path: str | os.PathLike[str], text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def redis_setup(var_dir: str | os.PathLike[str], port: int = 6379) -> str:
    """The demo Redis's URL and configuration, the password made on the first call only."""
    var = Path(var_dir).resolve()
    url_file = var / "redis-url"
    if url_file.exists():
        url = url_file.read_text().strip()
    else:
        url = f"redis://:{secrets.token_urlsafe(32)}@127.0.0.1:{port}/0"
        _private_write(url_file, url + "\n")
    parts = urlsplit(url)
    _private_write(
        var / "redis.conf",
        f"bind 127.0.0.1\nprotected-mode yes\nport {parts.port}\nrequirepass {unquote(parts.password)}\n"  # type: ignore[arg-type]  # our URL has one
        f"daemonize no\ndir {var}\ndbfilename redis.rdb\nsave 60 1\n",
    )
    return url


def render(
    var_dir: str | os.PathLike[str],
    bind: str = "127.0.0.1",
    port: int = 8000,
    with_redis: bool = False,
    procfile_path: str | os.PathLike[str] = ROOT / "Procfile",
    webs: int = 1,
) -> str:
    """supervisord's configuration. ``webs`` > 1: that many daphne processes
    serve ``bind``:``port``, a socket supervisord binds once and hands each as
    its stdin (an fcgi-program; daphne's ``--fd 0``), the way Channels' own
    deployment notes run several. One daphne runs every synchronous view on a
    single thread: the load bench saw one saturate near 55 requests a second."""
    var = Path(var_dir).resolve()
    sections: list[tuple[str, dict[str, object]]] = [
        ("unix_http_server", {"file": var / "supervisor.sock", "chmod": "0700"}),
        (
            "supervisord",
            {
                "logfile": var / "supervisord.log",
                "pidfile": var / "supervisord.pid",
                "childlogdir": var,
                "umask": "077",
                "directory": ROOT,
                "identifier": f"kvmweb-{var}",
            },
        ),
        (
            "rpcinterface:supervisor",
            {"supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"},
        ),
        ("supervisorctl", {"serverurl": f"unix://{var / 'supervisor.sock'}"}),
    ]
    programs: list[tuple[str, list[str], int]] = []
    if with_redis:
        programs.append(("redis", [shutil.which("redis-server") or "redis-server", str(var / "redis.conf")], 10))
    lines = procfile(procfile_path)
    shared: dict[str, dict[str, object]] = {}
    for name in lines:
        if name == "web" and webs > 1:
            programs.append((name, procfile_argv(name, lines=lines, fd=0), 20))
            shared[name] = {
                "socket": f"tcp://{bind}:{port}",
                "numprocs": webs,
                "process_name": _Expanded("%(program_name)s_%(process_num)s"),
                "stdout_logfile": _Expanded(f"{_escape(var / name)}_%(process_num)s.log"),
            }
        else:
            programs.append((name, procfile_argv(name, port=port, bind=bind, lines=lines), 20))
    for name, argv, priority in programs:
        sections.append(
            (
                f"fcgi-program:{name}" if name in shared else f"program:{name}",
                {
                    "command": _command(argv),
                    "directory": ROOT,
                    "priority": priority,
                    "autostart": "true",
                    "autorestart": "true",
                    "startsecs": START_SECONDS,
                    "startretries": START_RETRIES,
                    # The RQ worker finishes its job on TERM; a migration it
                    # leaves is peer-to-peer and carries on in libvirt, and the
                    # next worker's reconcile settles it. Its work horses go too.
                    "stopsignal": "TERM",
                    "stopwaitsecs": 10,
                    "stopasgroup": "true",
                    "killasgroup": "true",
                    "redirect_stderr": "true",
                    "stdout_logfile": var / f"{name}.log",
                    "stdout_logfile_maxbytes": "10MB",
                    "stdout_logfile_backups": 3,
                    **shared.get(name, {}),
                },
            )
        )
    out = []
    for title, values in sections:
        out.append(f"[{title}]")
        out.extend(
            f"{key}={value if key == 'command' or isinstance(value, _Expanded) else _escape(value)}"
            for key, value in values.items()
        )
        out.append("")
    return "\n".join(out)


def write(var_dir: str | os.PathLike[str], **kwargs: Any) -> Path:
    path = Path(var_dir) / "supervisord.conf"
    _private_write(path, render(var_dir, **kwargs))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["redis", "conf"])
    parser.add_argument("var_dir")
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int)
    parser.add_argument("--with-redis", action="store_true")
    parser.add_argument("--webs", type=int, default=1, help="daphne processes serving the one address")
    args = parser.parse_args()
    os.umask(0o077)
    if args.what == "redis":
        print(redis_setup(args.var_dir, port=args.port or 6379))
    else:
        print(write(args.var_dir, bind=args.bind, port=args.port or 8000, with_redis=args.with_redis, webs=args.webs))


if __name__ == "__main__":
    main()
