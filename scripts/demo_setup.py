"""Fill a kvmweb database for the demo: admin user, hosts, guests, inventory.

    python scripts/demo_setup.py --lab NAME      # the lab's kvm01, kvm02 and kvm03, three guests
    python scripts/demo_setup.py --test-driver   # no lab here: libvirt's test driver

Run from the project directory after `manage.py migrate` (scripts/demo.sh does
both). Every step is idempotent: an existing user keeps its password, an
existing host its row, an existing guest is left as it is.
"""

import argparse
import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kvmweb.settings")

ADMIN = "admin"

# The three guests of issue 3: one on the shared pool (live-migrates as is),
# one with a disk on a local pool (needs copy storage or a cold migration),
# one that keeps rewriting 64 MiB of its memory (the "memory changes
# frequently": capped at 16 MiB/s a live migration of it does not converge).
GUESTS = [
    ("web01", "kvm01", dict(memory_mib=256, disk="shared")),
    ("db01", "kvm01", dict(memory_mib=256, disk="local")),
    ("busy01", "kvm02", dict(memory_mib=384, disk="shared", dirty_mib=64, dirty_rate_mib=20)),
]


def say(message):
    print(message, flush=True)


def ensure_admin():
    from django.contrib.auth.models import User

    wanted = os.environ.get("KVMWEB_ADMIN_PASSWORD", "")
    user = User.objects.filter(username=ADMIN).first()
    if user is None:
        password = wanted or secrets.token_urlsafe(12)
        User.objects.create_superuser(ADMIN, "", password)
        if wanted:
            say(f"admin user: created '{ADMIN}' with the password from KVMWEB_ADMIN_PASSWORD")
        else:
            say(f"admin user: created '{ADMIN}', password: {password}")
            say(
                "            (shown only this once; change it with "
                f"`.venv/bin/python manage.py changepassword {ADMIN}`)"
            )
        return
    if wanted and not user.check_password(wanted):
        user.set_password(wanted)
        user.save(update_fields=["password"])
        say(f"admin user: '{ADMIN}' exists; its password was set from KVMWEB_ADMIN_PASSWORD")
        return
    say(
        f"admin user: '{ADMIN}' exists; its password is unchanged "
        f"(forgotten? `.venv/bin/python manage.py changepassword {ADMIN}`)"
    )


def register(name, uri):
    from django.core.management import call_command

    call_command("register_host", name, uri)


def setup_lab(name):
    from django.core.management import call_command

    from tests.lab import Lab

    lab = Lab(name=name)
    if not lab.is_up():
        raise SystemExit(f"the lab {name!r} is not up: run `make lab-up` first")
    connect_over_ssh(lab)
    for guest, host, kwargs in GUESTS:
        found = _find(lab, guest)
        if found:
            say(f"guest {guest}: already defined on {found}")
            continue
        say(f"guest {guest}: starting on {host} ({_describe(kwargs)})")
        lab.make_guest(host, guest, **kwargs)
    call_command("sync_inventory")
    mark_lab_share(lab)


def mark_lab_share(lab):
    """The lab's share is a FUSE mount in a directory pool: say it is shared, as an
    administrator does for an NFS mount defined as a dir pool, so that evacuation
    plans leave its disks where they are (the pre-flight checks still prove it)."""
    from hosts.models import StoragePool

    StoragePool.objects.filter(name="shared", host__name__in=lab.hosts).update(marked_shared=True)


def connect_over_ssh(lab):
    """Register the lab's hosts over SSH the way docs/OPERATIONS.md tells a new user to:
    kvmweb's key into root's authorized_keys on each host, then the host key
    kvmweb is shown compared with what the host itself says, and confirmed."""
    from hosts import sshkeys, trust
    from hosts.models import Host

    say(f"kvmweb's SSH key ({sshkeys.key_path()}.pub): {sshkeys.public_key()}")
    for host in lab.hosts:
        lab.authorize_key(host, sshkeys.public_key())
        say(f"host {host}: kvmweb's key added for root (on a real host: {sshkeys.authorized_keys_line()})")
        register(host, lab.ssh_uri(host))
        row = Host.objects.get(name=host)
        if row.host_key_state == "trusted":
            say(f"host {host}: SSH host key {row.ssh_fingerprint} confirmed earlier")
            continue
        shown, on_host = row.ssh_offered_fingerprint, lab.ssh_fingerprint(host)
        say(f"host {host}: kvmweb is shown the host key  {shown or '(none: the host did not answer)'}")
        say(f"host {host}: `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` there says {on_host}")
        if shown != on_host:
            raise SystemExit(f"host {host}: the fingerprints differ; not confirming (see the host's page)")
        say(f"host {host}: {trust.confirm_host_key(row, on_host, user=None)} (host key confirmed)")


def _find(lab, guest):
    where = []
    for host in lab.hosts:
        with lab.connection(host) as conn:
            for dom in conn.listAllDomains(0):
                if dom.name() == guest:
                    where.append(f"{host} ({'running' if dom.isActive() else 'not running'})")
    return ", ".join(where)


def _describe(kwargs):
    parts = [f"{kwargs['memory_mib']} MiB", f"disk on the {kwargs['disk']} pool"]
    if kwargs.get("dirty_mib"):
        parts.append(f"dirties {kwargs['dirty_mib']} MiB at {kwargs['dirty_rate_mib']} MiB/s")
    return ", ".join(parts)


def setup_test_driver():
    from django.conf import settings

    from tests import testdriver

    # test:///default is one fixed host; a second host from a test-driver file
    # with a few domains gives the pages something to show.
    register("test01", "test:///default")
    # Test-driver files are refused outside KVMWEB_TEST_DRIVER_DIR.
    directory = Path(settings.KVMWEB_TEST_DRIVER_DIR)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    register("test02", testdriver.write_host(directory, "test02", count=6))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--lab", metavar="NAME")
    group.add_argument("--test-driver", action="store_true")
    args = parser.parse_args(argv)

    import django

    django.setup()
    from django.conf import settings

    # Nobody watches yet: the demo's Redis starts with its web processes,
    # after this (and a running demo's web processes restart after it).
    # Without a channel layer nothing is published, and nothing warns that
    # Redis does not answer.
    settings.CHANNEL_LAYERS = {}
    ensure_admin()
    if args.lab:
        setup_lab(args.lab)
    else:
        setup_test_driver()


if __name__ == "__main__":
    main()
