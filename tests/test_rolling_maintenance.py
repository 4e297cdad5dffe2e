"""Rolling maintenance on test-driver hosts: the order, the wait, the chain from
an evacuation's end to the next step, failure, cancel, and the 400s.

The moves themselves cannot run on the test driver: where a test needs an
evacuation or a return to have ended, it writes the end an evacuation's last
step writes (tests/test_rolling_lab.py runs the whole thing on the lab)."""

from datetime import timedelta

import django_rq
import pytest
from django.utils import timezone
from rq.registry import ScheduledJobRegistry

from hosts.models import Host
from hosts.sync import sync_host
from maintenance import rolling, runner, services
from maintenance.models import Evacuation, Item, Kind, RollingHost, RollingMaintenance
from migrations_app.models import AuditEntry
from tests.testdriver import write_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def hosts(tmp_path):
    """kvm01 with two running VMs (and one shut off), kvm02 and kvm03 empty."""
    made = {}
    for name, extra in (("kvm01", {"count": 3}), ("kvm02", {}), ("kvm03", {})):
        made[name] = Host.objects.create(name=name, uri=write_host(tmp_path, name, **extra))
        assert sync_host(made[name]).online
    return made


def start(api, user, hosts, **body):
    api.force_authenticate(user)
    return api.post("/api/rolling/", {"hosts": [h.pk for h in hosts], **body}, format="json")


def started(api, operator, hosts, **body):
    response = start(api, operator, hosts, **body)
    assert response.status_code == 202, response.content
    return response.json()["id"]


def entries(pk):
    return {e.host_name: e for e in RollingHost.objects.filter(rolling_id=pk)}


def states(pk):
    return [(e.host_name, e.state) for e in RollingHost.objects.filter(rolling_id=pk).order_by("position")]


def end(evacuation, status="succeeded", error=""):
    """What an evacuation's last step writes (its moves cannot run on the test driver)."""
    evacuation.refresh_from_db()
    plan = [{**i, "state": Item.MOVED if status == "succeeded" else Item.FAILED} for i in evacuation.plan]
    Evacuation.objects.filter(pk=evacuation.pk).update(
        status=status, error=error, plan=plan, started_at=timezone.now(), finished_at=timezone.now()
    )


def test_it_takes_the_hosts_one_at_a_time_and_waits_for_the_operator(api, operator, hosts):
    kvm01, kvm02 = hosts["kvm01"], hosts["kvm02"]
    pk = started(api, operator, [kvm01, kvm02])

    rolling.advance(pk)

    # Only the first host is emptied; the second waits its turn.
    assert states(pk) == [("kvm01", "evacuating"), ("kvm02", "waiting")]
    first = entries(pk)["kvm01"].evacuation
    assert (first.kind, first.host_name, len(first.plan)) == (Kind.EVACUATE, "kvm01", 2)
    assert Host.objects.get(pk=kvm01.pk).maintenance and not Host.objects.get(pk=kvm02.pk).maintenance
    assert not Evacuation.objects.filter(host=kvm02).exists()
    rolling.advance(pk)  # nothing has ended: nothing changes
    assert states(pk) == [("kvm01", "evacuating"), ("kvm02", "waiting")]

    end(first)
    rolling.advance(pk)
    rolling.advance(pk)

    # Empty: it stays in maintenance until the operator says.
    assert states(pk)[0] == ("kvm01", "maintenance")
    body = api.get(f"/api/rolling/{pk}/").json()
    assert body["current"] == "kvm01" and body["wait"] == "operator"
    assert body["hosts"][0]["waiting_display"] == "Waiting for an operator to mark it done."
    assert body["hosts"][0]["seconds_left"] is None
    assert not Evacuation.objects.filter(kind=Kind.RETURN).exists()

    done = api.post(f"/api/rolling/{pk}/done/")
    assert done.status_code == 202, done.content
    assert api.post(f"/api/rolling/{pk}/done/").status_code == 409  # marked already
    rolling.advance(pk)

    assert states(pk) == [("kvm01", "returning"), ("kvm02", "waiting")]
    back = entries(pk)["kvm01"].return_evacuation
    assert (back.kind, back.returns_id) == (Kind.RETURN, first.pk)
    assert not Host.objects.get(pk=kvm01.pk).maintenance

    end(back)
    rolling.advance(pk)

    # Home: then the next host.
    assert states(pk) == [("kvm01", "done"), ("kvm02", "evacuating")]
    second = entries(pk)["kvm02"].evacuation
    end(second)
    rolling.advance(pk)
    api.post(f"/api/rolling/{pk}/done/")
    rolling.advance(pk)
    end(entries(pk)["kvm02"].return_evacuation)
    rolling.advance(pk)

    final = RollingMaintenance.objects.get(pk=pk)
    assert (final.status, final.error) == ("succeeded", "")
    assert states(pk) == [("kvm01", "done"), ("kvm02", "done")]
    assert not Host.objects.filter(maintenance=True).exists()
    messages = [e.message for e in AuditEntry.objects.filter(action="rolling").order_by("at", "id")]
    assert "oscar started rolling maintenance" in messages[0] and "kvm01, kvm02" in messages[0]
    assert any("oscar marked kvm01 done" in m for m in messages)
    assert "succeeded: kvm01 done; kvm02 done." in messages[-1]


def test_a_timed_wait_brings_the_vms_back_when_it_is_up(api, operator, hosts):
    pk = started(api, operator, [hosts["kvm01"]], wait=600, bandwidth_mib=50)
    rolling.advance(pk)
    end(entries(pk)["kvm01"].evacuation)
    scheduled = ScheduledJobRegistry(queue=django_rq.get_queue("default"))
    before = set(scheduled.get_job_ids())

    rolling.advance(pk)

    entry = entries(pk)["kvm01"]
    assert entry.state == "maintenance"
    body = api.get(f"/api/rolling/{pk}/").json()["hosts"][0]
    assert 590 <= body["seconds_left"] <= 600
    assert body["waiting_display"] == "Waiting for an operator to mark it done, or 10 min more."
    # A step is queued for the moment the time is up.
    new = [django_rq.get_queue("default").fetch_job(j) for j in set(scheduled.get_job_ids()) - before]
    assert [(j.func_name, list(j.args)) for j in new] == [("maintenance.rolling.advance", [pk])]

    RollingHost.objects.filter(pk=entry.pk).update(empty_since=timezone.now() - timedelta(seconds=601))
    rolling.advance(pk)

    entry = entries(pk)["kvm01"]
    assert entry.state == "returning"
    assert not Host.objects.get(pk=hosts["kvm01"].pk).maintenance
    # The evacuation and the return both move at the bandwidth asked for.
    assert (entry.evacuation.bandwidth_mib, entry.return_evacuation.bandwidth_mib) == (50, 50)


def test_the_end_of_its_evacuation_queues_the_next_step(api, operator, hosts, django_capture_on_commit_callbacks):
    pk = started(api, operator, [hosts["kvm01"]])
    rolling.advance(pk)
    evacuation = entries(pk)["kvm01"].evacuation
    # Its moves ended (moved); the evacuation's own step finishes it.
    evacuation.start()
    for item in evacuation.plan:
        item["state"] = Item.MOVED
    evacuation.save_plan()
    queue = django_rq.get_queue("default")
    queue.empty()

    with django_capture_on_commit_callbacks(execute=True):  # django-rq queues once the transaction commits
        runner.advance(evacuation.pk)

    assert Evacuation.objects.get(pk=evacuation.pk).status == "succeeded"
    assert [(j.func_name, list(j.args)) for j in queue.get_jobs()] == [("maintenance.rolling.advance", [pk])]


def test_a_failed_evacuation_stops_it_at_that_host_and_says_why(api, operator, hosts):
    pk = started(api, operator, [hosts["kvm01"], hosts["kvm02"]])
    rolling.advance(pk)
    end(entries(pk)["kvm01"].evacuation, "failed", "1 of 2 VM(s) were not moved: kvm01-vm002: no room.")

    rolling.advance(pk)

    final = RollingMaintenance.objects.get(pk=pk)
    assert final.status == "failed"
    assert states(pk) == [("kvm01", "failed"), ("kvm02", "skipped")]
    assert final.error.startswith("Stopped at kvm01:")
    assert "kvm01-vm002: no room" in final.error and "stays in maintenance" in final.error
    assert entries(pk)["kvm02"].note == "Not started: the rolling was stopped at kvm01."
    # Left as it is: kvm01 in maintenance; kvm02 never touched.
    assert Host.objects.get(pk=hosts["kvm01"].pk).maintenance
    assert not Evacuation.objects.filter(host=hosts["kvm02"]).exists()


def test_vms_that_fit_nowhere_stop_it_before_the_host_is_touched(api, operator, hosts):
    pk = started(api, operator, [hosts["kvm01"]])
    # Before its turn, both hosts the VMs could go to leave: kvm01's VMs fit nowhere.
    Host.objects.filter(name__in=["kvm02", "kvm03"]).update(maintenance=True)

    rolling.advance(pk)

    final = RollingMaintenance.objects.get(pk=pk)
    assert final.status == "failed"
    assert "Its evacuation could not start" in final.error and "fit on no other host" in final.error
    assert not Host.objects.get(pk=hosts["kvm01"].pk).maintenance
    assert not Evacuation.objects.exists()


def test_cancelling_while_a_host_is_emptied_stops_its_evacuation_and_leaves_the_rest(api, operator, hosts):
    pk = started(api, operator, [hosts["kvm01"], hosts["kvm02"]])
    rolling.advance(pk)
    evacuation = entries(pk)["kvm01"].evacuation

    response = api.post(f"/api/rolling/{pk}/cancel/")
    rolling.advance(pk)

    assert response.status_code == 202 and response.json()["cancel_requested"]
    assert Evacuation.objects.get(pk=evacuation.pk).status == "cancelled"
    final = RollingMaintenance.objects.get(pk=pk)
    assert final.status == "cancelled"
    assert states(pk) == [("kvm01", "stopped"), ("kvm02", "skipped")]
    body = api.get(f"/api/rolling/{pk}/").json()
    assert body["hosts"][0]["note"].startswith("In maintenance;") and "cancelled" in body["hosts"][0]["note"]
    assert body["hosts"][1]["note"] == "Not started: the rolling was cancelled."
    assert Host.objects.get(pk=hosts["kvm01"].pk).maintenance
    assert api.post(f"/api/rolling/{pk}/cancel/").status_code == 409
    # Once over, another may start.
    Host.objects.filter(pk=hosts["kvm01"].pk).update(maintenance=False)
    assert start(api, operator, [hosts["kvm01"]]).status_code == 202


def test_cancelling_while_a_host_waits_leaves_it_in_maintenance(api, operator, hosts):
    pk = started(api, operator, [hosts["kvm01"]])
    rolling.advance(pk)
    end(entries(pk)["kvm01"].evacuation)
    rolling.advance(pk)

    api.post(f"/api/rolling/{pk}/cancel/")
    rolling.advance(pk)

    assert RollingMaintenance.objects.get(pk=pk).status == "cancelled"
    entry = entries(pk)["kvm01"]
    assert entry.state == "stopped" and "In maintenance, emptied by" in entry.note
    assert Host.objects.get(pk=hosts["kvm01"].pk).maintenance
    assert not Evacuation.objects.filter(kind=Kind.RETURN).exists()


def test_a_step_killed_half_way_leaves_nothing_half_done_and_the_next_carries_on(api, operator, hosts, monkeypatch):
    pk = started(api, operator, [hosts["kvm01"]])

    class Killed(BaseException):
        pass

    def killed(*args, **kwargs):
        raise Killed  # the process dies after the evacuation was made, before the host's row says so

    with monkeypatch.context() as patch:
        patch.setattr(RollingHost, "move", killed)
        with pytest.raises(Killed):
            rolling.advance(pk)

    # Both or neither: no evacuation nobody knows of, the host not in maintenance.
    assert not Evacuation.objects.exists()
    assert not Host.objects.get(pk=hosts["kvm01"].pk).maintenance
    assert states(pk) == [("kvm01", "waiting")]

    assert rolling.advance_all() == [pk]  # reconcile's net queues a step; a fresh one carries on
    rolling.advance(pk)
    assert states(pk) == [("kvm01", "evacuating")]
    assert Evacuation.objects.get().host_name == "kvm01"


def test_starting_refuses_what_cannot_be_done_with_a_reason(api, operator, hosts):
    kvm01, kvm02, kvm03 = hosts["kvm01"], hosts["kvm02"], hosts["kvm03"]
    api.force_authenticate(operator)

    def refused(body):
        response = api.post("/api/rolling/", body, format="json")
        assert response.status_code == 400, response.content
        return str(response.json())

    assert "at least one host" in refused({"hosts": []})
    assert "No host with id 9999" in refused({"hosts": [kvm01.pk, 9999]})
    assert "kvm01 is listed more than once" in refused({"hosts": [kvm01.pk, kvm02.pk, kvm01.pk]})
    assert '"operator"' in refused({"hosts": [kvm01.pk], "wait": "soon"})
    assert '"operator"' in refused({"hosts": [kvm01.pk], "wait": -5})
    Host.objects.filter(pk=kvm03.pk).update(status="offline")
    assert "kvm03 is offline" in refused({"hosts": [kvm01.pk, kvm03.pk]})
    Host.objects.filter(pk=kvm02.pk).update(maintenance=True)
    assert "kvm02 is in maintenance already" in refused({"hosts": [kvm02.pk]})
    assert not RollingMaintenance.objects.exists()

    first = start(api, operator, [kvm01])
    assert first.status_code == 202
    assert f"Rolling maintenance #{first.json()['id']} is under way" in refused({"hosts": [kvm01.pk]})
    Host.objects.filter(pk=kvm02.pk).update(maintenance=False)
    assert "one runs at a time" in refused({"hosts": [kvm02.pk]})
    assert RollingMaintenance.objects.count() == 1


def test_a_host_with_an_evacuation_under_way_is_refused(api, operator, hosts):
    evacuation = services.enter_maintenance(operator, hosts["kvm01"])
    Host.objects.filter(pk=hosts["kvm01"].pk).update(maintenance=False)  # as if taken out while it runs

    response = start(api, operator, [hosts["kvm01"]])

    assert response.status_code == 400
    assert f"kvm01 has evacuation #{evacuation.pk} under way" in response.json()["detail"]


def test_viewers_follow_it_but_only_operators_change_it(api, operator, viewer, hosts):
    assert start(api, viewer, [hosts["kvm01"]]).status_code == 403
    pk = started(api, operator, [hosts["kvm01"]])
    rolling.advance(pk)
    end(entries(pk)["kvm01"].evacuation)
    rolling.advance(pk)
    api.force_authenticate(viewer)

    assert api.get(f"/api/rolling/{pk}/").json()["hosts"][0]["state"] == "maintenance"
    assert api.get("/api/rolling/").json()["results"][0]["id"] == pk
    assert api.post(f"/api/rolling/{pk}/done/").status_code == 403
    assert api.post(f"/api/rolling/{pk}/cancel/").status_code == 403
    assert RollingHost.objects.get(rolling_id=pk).done_at is None
    assert not RollingMaintenance.objects.get(pk=pk).cancel_requested


def test_marking_done_before_the_host_is_empty_is_refused(api, operator, hosts):
    pk = started(api, operator, [hosts["kvm01"]])
    rolling.advance(pk)

    response = api.post(f"/api/rolling/{pk}/done/")

    assert response.status_code == 409
    assert "kvm01 is evacuating: mark it done once its VMs have left" in response.json()["detail"]


def test_an_operator_starts_one_from_the_page_in_the_order_chosen(client, operator, hosts):
    client.force_login(operator)
    form = client.get("/rolling/").content.decode()
    assert 'id="start-rolling"' in form and form.count('name="host"') == 3

    response = client.post(
        "/rolling/",
        {"host": [str(hosts["kvm02"].pk), str(hosts["kvm01"].pk), ""], "wait": "timeout", "wait_minutes": "30"},
    )

    created = RollingMaintenance.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/rolling/{created.pk}/"
    assert created.wait_seconds == 1800
    assert states(created.pk) == [("kvm02", "waiting"), ("kvm01", "waiting")]
    refused = client.post("/rolling/", {"host": [str(hosts["kvm03"].pk)], "wait": "timeout", "wait_minutes": "-5"})
    assert "Give the longest wait in minutes, from 0 to 10080" in refused.content.decode()
    for odd in ("inf", "nan", "soon"):
        body = {"host": [str(hosts["kvm03"].pk)], "wait": "timeout", "wait_minutes": odd}
        assert "Give the longest wait in minutes" in client.post("/rolling/", body).content.decode()
    again = client.post("/rolling/", {"host": [str(hosts["kvm03"].pk)], "wait": "operator"}, follow=True)
    assert "is under way: one runs at a time" in again.content.decode()
    assert RollingMaintenance.objects.count() == 1


def test_the_page_says_where_it_is_and_offers_the_done_button_to_operators_only(client, api, operator, viewer, hosts):
    pk = started(api, operator, [hosts["kvm01"], hosts["kvm02"]], wait=1800)
    rolling.advance(pk)
    end(entries(pk)["kvm01"].evacuation)
    rolling.advance(pk)
    # Notes carry texts from elsewhere (a migration's error): escaped like every name.
    RollingHost.objects.filter(rolling_id=pk, host_name="kvm02").update(note="<script>alert(1)</script>")

    client.force_login(operator)
    page = client.get(f"/rolling/{pk}/").content.decode()

    rows = {name: page.split(f'data-host="{name}"')[1].split("</tr>")[0] for name in ("kvm01", "kvm02")}
    assert "In maintenance" in rows["kvm01"]
    assert "Waiting for an operator to mark it done, or 30 min more." in rows["kvm01"]
    assert "Its VMs come back at" in rows["kvm01"]
    assert "Waiting its turn" in rows["kvm02"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rows["kvm02"] and "<script>alert" not in page
    assert "Host is done — bring its VMs back" in page and 'data-question="Is kvm01 done?' in page
    assert "data-reload-seconds" in page

    client.force_login(viewer)
    seen = client.get(f"/rolling/{pk}/").content.decode()
    assert "Host is done" not in seen and 'id="cancel-rolling"' not in seen
    assert client.post(f"/rolling/{pk}/done/").status_code == 403
    assert 'id="start-rolling"' not in client.get("/rolling/").content.decode()

    evacuation_page = client.get(entries(pk)["kvm01"].evacuation.get_absolute_url()).content.decode()
    assert f'id="part-of-rolling">rolling maintenance #{pk}</a>' in evacuation_page

    client.force_login(operator)
    assert client.post(f"/rolling/{pk}/done/").status_code == 302
    assert RollingHost.objects.get(rolling_id=pk, host_name="kvm01").done_by_name == "oscar"


def test_the_periodic_reconcile_carries_on_the_running_one(api, operator, hosts, django_capture_on_commit_callbacks):
    from kvmweb.worker import reconcile_periodically

    pk = started(api, operator, [hosts["kvm01"]])
    queue = django_rq.get_queue("default")
    queue.empty()

    with django_capture_on_commit_callbacks(execute=True):
        done = reconcile_periodically()

    assert (pk, "rolling maintenance carried on") in done
    assert ("maintenance.rolling.advance", [pk]) in [(j.func_name, list(j.args)) for j in queue.get_jobs()]


def test_the_admin_lists_them_read_only(client, owner, api, operator, hosts):
    started(api, operator, [hosts["kvm01"]])
    client.force_login(owner)

    page = client.get("/admin/maintenance/rollingmaintenance/")

    assert page.status_code == 200 and "oscar" in page.content.decode()
    assert client.get("/admin/maintenance/rollingmaintenance/add/").status_code == 403


def test_cancelling_before_its_first_step_touches_no_host(api, operator, hosts):
    pk = started(api, operator, [hosts["kvm01"], hosts["kvm02"]])

    assert api.post(f"/api/rolling/{pk}/cancel/").status_code == 202
    rolling.advance(pk)

    assert RollingMaintenance.objects.get(pk=pk).status == "cancelled"
    assert states(pk) == [("kvm01", "skipped"), ("kvm02", "skipped")]
    assert not Evacuation.objects.exists() and not Host.objects.filter(maintenance=True).exists()


@pytest.mark.parametrize("return_vms", [True, False])
def test_a_host_taken_out_of_maintenance_on_its_page_is_followed(api, operator, hosts, return_vms):
    pk = started(api, operator, [hosts["kvm01"], hosts["kvm02"]])
    rolling.advance(pk)
    end(entries(pk)["kvm01"].evacuation)
    rolling.advance(pk)

    # The operator uses the host's own "Leave maintenance" instead of the rolling page.
    by_hand = services.activate(operator, Host.objects.get(name="kvm01"), return_vms=return_vms)
    rolling.advance(pk)

    entry = entries(pk)["kvm01"]
    if return_vms:
        assert (entry.state, entry.return_evacuation_id) == ("returning", by_hand.pk)
    else:
        assert entry.state == "done" and "without bringing its VMs back" in entry.note
        assert states(pk)[1] == ("kvm02", "evacuating")  # and on to the next host
    assert Evacuation.objects.filter(kind=Kind.RETURN).count() == (1 if return_vms else 0)
