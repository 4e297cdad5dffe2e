"""Helpers for the tests that migrate real guests on the lab."""

import threading
import time

from django.db import connection

from hosts.models import Domain, Host, StoragePool
from hosts.sync import sync_host
from migrations_app import jobs
from migrations_app.models import Migration


def register_lab(lab):
    hosts = {}
    for name in lab.hosts:
        host, _ = Host.objects.update_or_create(name=name, defaults={"uri": lab.uri(name)})
        assert sync_host(host).online, host.status_reason
        hosts[name] = host
    # The lab's share is a FUSE mount in a dir pool: marked shared, as
    # scripts/demo_setup.py does, so that evacuation plans keep its disks.
    StoragePool.objects.filter(name="shared", host__in=hosts.values()).update(marked_shared=True)
    return hosts


def sync_all():
    for host in Host.objects.all():
        sync_host(host)


def domain(name, host="kvm01"):
    """The inventory's row for a guest, after a fresh sync of every host."""
    sync_all()
    return Domain.objects.select_related("host").get(name=name, host__name=host)


def request(api, user, dom, target, **fields):
    api.force_authenticate(user)
    body = {"domain": dom.pk, "target_host": target.pk, "mode": "live", **fields}
    return api.post("/api/migrations/", body, format="json")


def migration_for(dom, target, **fields):
    """A migration row of ``dom`` to ``target``, as a request makes it (queued unless ``status``)."""
    return Migration.objects.create(
        domain=dom,
        domain_name=dom.name,
        domain_uuid=dom.uuid,
        source=dom.host,
        source_name=dom.host.name,
        target=target,
        target_name=target.name,
        **{"mode": "live", **fields},
    )


def run(pk):
    """Run the queued migration's job here, as a worker would."""
    jobs.run_migration(pk)
    return Migration.objects.get(pk=pk)


def run_in_thread(pk, job=None):
    """Run a queued job (the migration's, or ``job``) in a thread, as a worker would."""

    def target():
        try:
            (job or jobs.run_migration)(pk)
        finally:
            # A thread's database connection is its own: close it, or the
            # test database cannot be dropped at the end of the session.
            connection.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def wait_for(predicate, timeout=60, interval=0.25, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_transferring(pk, timeout=60):
    """Until libvirt reports data moving for this migration."""

    def moving():
        m = Migration.objects.get(pk=pk)
        assert m.status in ("queued", "checking", "running"), (m.status, m.error)
        return m if m.status == "running" and (m.progress or {}).get("data_processed") else None

    return wait_for(moving, timeout, what=f"migration {pk} to transfer data")


def ticks_carry_on(lab, name, before, timeout=30):
    """The guest keeps ticking after the move and its uptime never went back."""
    after = wait_for(
        lambda: (t := lab.last_tick(name)) and t[0] > before[0] + 1 and t, timeout, what=f"{name} to tick again"
    )
    assert after[1] > before[1], f"uptime went back: {before} -> {after}"
    return after
