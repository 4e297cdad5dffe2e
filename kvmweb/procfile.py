"""The Procfile's lines as commands: for the demo's supervisor and the benchmarks."""

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def procfile(path: str | os.PathLike[str] = ROOT / "Procfile") -> dict[str, list[str]]:
    """``{name: argv}`` from the Procfile, in its order."""
    lines: dict[str, list[str]] = {}
    for line in Path(path).read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and not line.lstrip().startswith("#"):
            lines[name.strip()] = shlex.split(command)
    return lines


def procfile_argv(
    name: str,
    port: int | str | None = None,
    bind: str | None = None,
    lines: dict[str, list[str]] | None = None,
    fd: int | None = None,
) -> list[str]:
    """The command for ``name`` with this virtualenv's programs and, for web, ``port`` and ``bind``.

    ``fd``: web listens on that inherited socket instead of binding one (daphne's
    ``--fd``): several daphne processes started so serve one address, the
    socket bound once by whoever starts them (see supervisor.py)."""
    argv = list((lines or procfile())[name])
    if argv[0] == "python":
        argv[0] = sys.executable
    elif (BIN / argv[0]).exists():
        argv[0] = str(BIN / argv[0])
    for option, value in (("-p", port), ("-b", bind)):
        if value is not None and option in argv:
            argv[argv.index(option) + 1] = str(value)
    if fd is not None and "-p" in argv:
        for option in ("-b", "-p"):
            if option in argv:
                del argv[argv.index(option) : argv.index(option) + 2]
        argv[1:1] = ["--fd", str(fd)]
    return argv


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m kvmweb.procfile run NAME``: become that Procfile line's process.

    For process managers that run one program per unit (deploy/'s systemd
    template): web takes KVMWEB_BIND and KVMWEB_PORT from the environment.
    """
    parser = argparse.ArgumentParser(prog="python -m kvmweb.procfile")
    parser.add_argument("action", choices=["run", "names"])
    parser.add_argument("name", nargs="?")
    args = parser.parse_args(argv)
    lines = procfile()
    if args.action == "names":
        print("\n".join(lines))
        return
    if args.name not in lines:
        parser.error(f"the Procfile has no line {args.name!r}; it has {', '.join(lines)}")
    os.umask(0o077)
    command = procfile_argv(
        args.name, port=os.environ.get("KVMWEB_PORT"), bind=os.environ.get("KVMWEB_BIND"), lines=lines
    )
    os.chdir(ROOT)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
