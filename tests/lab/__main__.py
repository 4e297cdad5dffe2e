"""python -m tests.lab up|down|status [--name NAME] [--hosts kvm01,kvm02,kvm03] [--no-bridge-on kvm02]"""

import argparse
import json
import sys
import time

from .lab import DEFAULT_HOSTS, Lab, LabError, default_name


def _split(value):
    return tuple(v for v in (value or "").split(",") if v)


def _print_status(status):
    if not status.get("hosts"):
        print("lab %s: down" % status["name"])
        return
    print(
        "lab %s: %s  subnet %s  bridge %s  shared %s"
        % (status["name"], "up" if status["up"] else "broken", status["subnet"], status["bridge"], status["shared_dir"])
    )
    for host, info in status["hosts"].items():
        print(
            "  %-8s %-30s libvirtd %-8s link %-5s br0 %s"
            % (
                host,
                info["uri"],
                "answers" if info["libvirtd"] else "silent",
                info["link"],
                "yes" if info["br0"] else "no",
            )
        )


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__)
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--name", default=None, help="lab name (default: $KVMWEB_LAB_NAME or %s)" % default_name())
    parser.add_argument("--hosts", default=",".join(DEFAULT_HOSTS))
    parser.add_argument("--no-bridge-on", default="", help="hosts without br0, comma-separated")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    args = parser.parse_args(argv)
    lab = Lab(name=args.name, hosts=_split(args.hosts), no_bridge_on=_split(args.no_bridge_on))
    try:
        if args.command == "up":
            was_up = lab.is_up()
            started = time.monotonic()
            status = lab.up()
            if not args.json:
                print(
                    "lab %s %s in %.1f s"
                    % (lab.name, "was already up" if was_up else "is up", time.monotonic() - started)
                )
        elif args.command == "down":
            lab.down()
            status = lab.status()
        else:
            status = lab.status()
    except LabError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        _print_status(status)
    if args.command == "status":
        return 0 if status["up"] and all(h["libvirtd"] for h in status["hosts"].values()) else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
