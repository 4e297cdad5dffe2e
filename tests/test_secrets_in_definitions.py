"""A VM's definition may hold passwords (VNC, SPICE). kvmweb reads the definition with them to move the
VM, and they go with it to the target; they reach no record, page, API answer, live message or log line
on the way."""

import asyncio
import contextlib
import io
import json
import logging
import secrets

import libvirt
import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management import call_command

from dashboard.publishing import DASHBOARD_GROUP
from hosts.models import Domain
from migrations_app.models import AuditEntry, Migration
from tests.lab import devices as lab_devices
from tests.migration_helpers import domain, register_lab, request, run, run_in_thread, wait_transferring

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


def secure_xml(lab, host, name):
    """The definition as libvirt gives it to those who ask for its secrets."""
    with lab.connection(host) as conn:
        return conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)


@contextlib.contextmanager
def every_log_line(caplog):
    """Every logger at DEBUG into caplog, also those that do not propagate to the root."""
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]
    levels = {lg: lg.level for lg in loggers}
    apart = [lg for lg in loggers if not lg.propagate]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    for lg in apart:
        lg.addHandler(caplog.handler)
    caplog.handler.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        for lg in apart:
            lg.removeHandler(caplog.handler)
        for lg, level in levels.items():
            lg.setLevel(level)


def everything_in_redis(url):
    """Every key and value of the session's Redis (queues, jobs, channel messages not yet received)."""
    r = redis.Redis.from_url(url)
    dump = []
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        if kind == b"string":
            values = [r.get(key)]
        elif kind == b"list":
            values = r.lrange(key, 0, -1)
        elif kind == b"set":
            values = list(r.smembers(key))
        elif kind == b"zset":
            values = r.zrange(key, 0, -1)
        elif kind == b"hash":
            values = [b for pair in r.hgetall(key).items() for b in pair]
        else:  # streams: RQ does not use them, nor channels-redis
            values = [repr(r.xrange(key)).encode()] if kind == b"stream" else []
        dump.append(key + b" " + b" ".join(v or b"" for v in values))
    return b"\n".join(dump).decode("utf-8", "replace")


def received(layer, channel):
    """The messages waiting on a channel."""

    async def drain():
        messages = []
        while True:
            try:
                messages.append(await asyncio.wait_for(layer.receive(channel), 1.0))
            except TimeoutError:
                return messages

    return async_to_sync(drain)()


@pytest.mark.parametrize("mode", ["live", "cold"])
def test_a_vnc_password_moves_with_the_vm_and_is_written_nowhere(
    api, client, operator, lab, lab_guest, caplog, redis_url, mode
):
    # Eight characters, libvirt's limit for VNC; none of them a hex digit, so no id or digest holds it by chance.
    secret = "".join(secrets.choice("GHJKLMNPQRSTVWXYZghjkmnpqrstvwxyz") for _ in range(8))
    hosts = register_lab(lab)
    # Bound to the source's address, so kvmweb rewrites the definition for the target itself.
    vnc = lab_devices.vnc(lab.address("kvm01"), passwd=secret)
    name = lab_guest("kvm01", disk="shared", extra_devices=[vnc])
    assert f"passwd='{secret}'" in secure_xml(lab, "kvm01", name)

    # Every change of state and every note goes to the dashboard's group. (The progress samples go
    # to the migration's group alone, twice a second: in a slow run they would fill the channel's
    # 100 messages, and they carry the same as_event(), which is searched itself below.)
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(DASHBOARD_GROUP, channel)
    with every_log_line(caplog):
        response = request(api, operator, domain(name), hosts["kvm02"], mode=mode)
        assert response.status_code == 201, response.content
        pk = response.json()["id"]
        migration = run(pk)
        assert migration.status == "succeeded", (migration.error, migration.error_detail)
        assert any(e["message"].startswith("Adapted for kvm02: VNC graphics listens on") for e in migration.events)
        moved = domain(name, host="kvm02")

        places = everywhere(api, client, operator, migration, moved)
    places["redis"] = everything_in_redis(redis_url)
    messages = received(layer, channel)
    # The live messages the sockets forward, from the request to the end.
    statuses = [m["migration"]["status"] for m in messages if m.get("migration")]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded", statuses
    places["the live messages"] = json.dumps(messages, default=str)
    places["the logs"] = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert len(caplog.records) > 0

    leaks = [where for where, text in places.items() if secret in text]
    assert leaks == [], "the password is in: " + ", ".join(leaks)
    # ...and the password went with the VM: it was read, kept from every record, and not lost.
    assert f"passwd='{secret}'" in secure_xml(lab, "kvm02", name)


def test_a_vnc_password_is_written_nowhere_when_the_migration_is_cancelled(
    api, client, operator, lab, lab_guest, caplog, redis_url
):
    """The failure path: the definition with the password was read and rewritten for the target, the
    transfer started (the target holds an incoming copy), then it is cancelled and cleaned up."""
    secret = "".join(secrets.choice("GHJKLMNPQRSTVWXYZghjkmnpqrstvwxyz") for _ in range(8))
    hosts = register_lab(lab)
    vnc = lab_devices.vnc(lab.address("kvm01"), passwd=secret)
    name = lab_guest("kvm01", disk="shared", memory_mib=384, extra_devices=[vnc])
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(DASHBOARD_GROUP, channel)
    with every_log_line(caplog):
        # 384 MiB at 8 MiB/s: long enough to cancel while it runs.
        pk = request(api, operator, domain(name), hosts["kvm02"], bandwidth_mib=8).json()["id"]
        thread = run_in_thread(pk)
        wait_transferring(pk)
        assert api.post(f"/api/migrations/{pk}/cancel/").status_code == 202
        thread.join(60)
        assert not thread.is_alive()
        migration = Migration.objects.get(pk=pk)
        assert migration.status == "cancelled", (migration.status, migration.error)
        places = everywhere(api, client, operator, migration, domain(name, host="kvm01"))
    places["redis"] = everything_in_redis(redis_url)
    messages = received(layer, channel)
    assert [m["migration"]["status"] for m in messages if m.get("migration")][-1] == "cancelled"
    places["the live messages"] = json.dumps(messages, default=str)
    places["the logs"] = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)

    leaks = [where for where, text in places.items() if secret in text]
    assert leaks == [], "the password is in: " + ", ".join(leaks)
    # The VM stayed where it was, its password with it.
    assert lab.where(name) == ["kvm01"]
    assert f"passwd='{secret}'" in secure_xml(lab, "kvm01", name)


def everywhere(api, client, operator, migration, moved):
    """What kvmweb shows and keeps of a migration and its VM: records, API answers, pages."""
    pk = migration.pk
    api.force_authenticate(operator)
    client.force_login(operator)
    places = {
        "migration.events": json.dumps(migration.events),
        "migration.stats": json.dumps(migration.stats),
        "migration.progress": json.dumps(migration.progress),
        "migration.checks": json.dumps(migration.checks),
        "migration.error": f"{migration.error} {migration.error_detail}",
        "migration.as_event()": json.dumps(migration.as_event(), default=str),
        "domain.as_event()": json.dumps(Domain.objects.with_definitions().get(pk=moved.pk).as_event()),
        "the audit": json.dumps([[e.message, e.data] for e in AuditEntry.objects.all()], default=str),
        "the database": dump_database(),
    }
    for url in (
        f"/api/migrations/{pk}/",
        "/api/migrations/",
        f"/api/domains/{moved.pk}/",
        "/api/domains/",
        "/api/audit/",
        "/api/hosts/",
    ):
        answer = api.get(url)
        assert answer.status_code == 200, (url, answer.status_code)
        places[url] = answer.content.decode()
    for url in (
        f"/migrations/{pk}/",
        f"/domains/{moved.uuid}/",
        "/migrations/",
        "/domains/",
        "/audit/",
        "/audit/export.csv",
        "/hosts/kvm01/",
        "/hosts/kvm02/",
        "/",
    ):
        page = client.get(url)
        assert page.status_code == 200, (url, page.status_code)
        places[url] = b"".join(page.streaming_content if page.streaming else [page.content]).decode()
    return places


def dump_database():
    out = io.StringIO()
    call_command("dumpdata", exclude=["django_rq"], stdout=out)  # django_rq: a model without a table
    return out.getvalue()
