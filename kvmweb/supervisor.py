"""The demo's supervisor: supervisord's configuration, written from the Procfile.

    python -m kvmweb.supervisor VAR_DIR [--bind 127.0.0.1] [--port 8000] [--redis-conf FILE]

Every Procfile line (web, worker, and any line added later) becomes a program
that supervisord restarts when it dies; with ``--redis-conf``, Redis too (the
demo's own, with the password that file sets). The programs inherit
supervisord's environment (REDIS_URL, KVMWEB_*), so no setting is copied
into the file. Everything supervisord writes stays in VAR_DIR, private:
umask 077 for it and its programs, its control socket 0700.
"""

import argparse
import os
import shlex
import shutil
from pathlib import Path

from kvmweb.procfile import ROOT, procfile, procfile_argv

# A program that stops within this many seconds of starting counts as failed
# to start; supervisord tries again up to START_RETRIES times, then gives up
# (FATAL in `make status`). A program that ran longer is restarted every time.
START_SECONDS = 2
START_RETRIES = 10


def _escape(value):
    # supervisord expands %(name)s in values: keep a literal % literal.
    return str(value).replace("%", "%%")


def _command(argv):
    return _escape(shlex.join(argv))


def render(var_dir, bind="127.0.0.1", port=8000, redis_conf=None, procfile_path=ROOT / "Procfile"):
    var = Path(var_dir).resolve()
    sections = [
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
    programs = []
    if redis_conf:
        programs.append(
            ("redis", [shutil.which("redis-server") or "redis-server", str(Path(redis_conf).resolve())], 10)
        )
    lines = procfile(procfile_path)
    for name in lines:
        programs.append((name, procfile_argv(name, port=port, bind=bind, lines=lines), 20))
    for name, argv, priority in programs:
        sections.append(
            (
                f"program:{name}",
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
                },
            )
        )
    out = []
    for title, values in sections:
        out.append(f"[{title}]")
        out.extend(f"{key}={value if key == 'command' else _escape(value)}" for key, value in values.items())
        out.append("")
    return "\n".join(out)


def write(var_dir, **kwargs):
    path = Path(var_dir) / "supervisord.conf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(render(var_dir, **kwargs))
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("var_dir")
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--redis-conf")
    args = parser.parse_args()
    os.umask(0o077)
    print(write(args.var_dir, bind=args.bind, port=args.port, redis_conf=args.redis_conf))


if __name__ == "__main__":
    main()
