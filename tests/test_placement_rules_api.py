"""Placement rules through the API on test-driver hosts: who may change them,
what is refused, the audit, and that plans and manual migrations obey them."""

import pytest

from hosts.models import Domain, Host
from hosts.sync import sync_host
from maintenance.models import PlacementRule
from migrations_app.models import AuditEntry
from tests.testdriver import write_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def hosts(tmp_path):
    made = {}
    for name, count in (("kvm01", 3), ("kvm02", 3), ("kvm03", 0)):
        made[name] = Host.objects.create(name=name, uri=write_host(tmp_path, name, count=count))
        assert sync_host(made[name]).online
    return made


def uuid_of(name):
    return str(Domain.objects.get(name=name).uuid)


def create(api, user, **body):
    api.force_authenticate(user)
    return api.post("/api/rules/", body, format="json")


def apart(api, operator, *names, rule="db-replicas"):
    response = create(api, operator, name=rule, kind="apart", vms=[uuid_of(n) for n in names])
    assert response.status_code == 201, response.content
    return response.json()


def test_operators_write_rules_and_viewers_read_them(api, operator, viewer, hosts):
    body = apart(api, operator, "kvm01-vm001", "kvm02-vm001")
    assert body["kind"] == "apart" and body["created_by_name"] == operator.username

    refused = create(api, viewer, name="mine", kind="apart", vms=body["vms"])
    assert refused.status_code == 403
    assert api.get("/api/rules/").json()["results"][0]["name"] == "db-replicas"
    assert api.delete(f"/api/rules/{body['id']}/").status_code == 403
    assert PlacementRule.objects.count() == 1


def test_each_change_is_audited_with_the_vms_by_name(api, operator, hosts):
    body = apart(api, operator, "kvm01-vm001", "kvm02-vm001")
    api.patch(f"/api/rules/{body['id']}/", {"enabled": False}, format="json")
    api.delete(f"/api/rules/{body['id']}/")

    messages = list(AuditEntry.objects.filter(action="rule").order_by("id").values_list("message", flat=True))
    assert len(messages) == 3
    assert messages[0] == "oscar created placement rule db-replicas (keep apart: kvm01-vm001, kvm02-vm001)"
    assert messages[1].endswith("; it is disabled") and messages[2].startswith("oscar removed placement rule")
    entry = AuditEntry.objects.filter(action="rule").first()
    assert entry.username == "oscar" and entry.data["rule"] == "db-replicas"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"kind": "apart", "vms": ["kvm01-vm001"]}, "at least two VMs"),
        ({"kind": "pinned", "vms": ["kvm01-vm001"]}, "at least one host"),
        ({"kind": "together", "vms": ["kvm01-vm001", "kvm01-vm002"], "hosts": ["kvm03"]}, "Only a pinned rule"),
        ({"kind": "apart", "vms": ["kvm01-vm001", "00000000-0000-0000-0000-00000000abcd"]}, "No VM with UUID"),
    ],
)
def test_a_rule_that_cannot_work_is_refused_with_what_to_do(api, operator, hosts, body, words):
    body["vms"] = [uuid_of(v) if v.startswith("kvm") else v for v in body["vms"]]
    body["hosts"] = [hosts[h].pk for h in body.get("hosts", [])]
    response = create(api, operator, name="bad", **body)

    assert response.status_code == 400
    assert words in str(response.json())
    assert not PlacementRule.objects.exists()


def test_a_manual_migration_that_breaks_a_rule_fails_its_check_with_the_rules_name(api, operator, hosts):
    apart(api, operator, "kvm01-vm001", "kvm02-vm001")
    domain = Domain.objects.get(name="kvm01-vm001")

    def checks(target):
        response = api.post(
            "/api/migrations/",
            {"domain": domain.pk, "target_host": hosts[target].pk, "mode": "live", "dry_run": True},
            format="json",
        )
        assert response.status_code == 200, response.content
        return {c["name"]: c for c in response.json()["checks"]}

    broken = checks("kvm02")["placement_rules"]
    assert broken["result"] == "fail"
    assert "rule db-replicas keeps kvm01-vm001 apart from kvm02-vm001, which is on kvm02" in broken["message"]
    assert checks("kvm03")["placement_rules"]["result"] == "pass"


def test_a_disabled_rule_binds_nothing(api, operator, hosts):
    body = apart(api, operator, "kvm01-vm001", "kvm02-vm001")
    api.patch(f"/api/rules/{body['id']}/", {"enabled": False}, format="json")
    domain = Domain.objects.get(name="kvm01-vm001")
    response = api.post(
        "/api/migrations/",
        {"domain": domain.pk, "target_host": hosts["kvm02"].pk, "mode": "live", "dry_run": True},
        format="json",
    )
    assert "placement_rules" not in {c["name"] for c in response.json()["checks"]}


def test_the_evacuation_plan_obeys_a_pinned_rule(api, operator, hosts):
    # Without the rule kvm01's running VMs go to the empty kvm03 first.
    api.force_authenticate(operator)
    before = api.post(f"/api/hosts/{hosts['kvm01'].pk}/maintenance/", {"dry_run": True}, format="json").json()
    assert {m["domain_name"]: m["target_name"] for m in before["plan"]}["kvm01-vm001"] == "kvm03"

    response = create(
        api, operator, name="licensed", kind="pinned", vms=[uuid_of("kvm01-vm001")], hosts=[hosts["kvm02"].pk]
    )
    assert response.status_code == 201, response.content
    after = api.post(f"/api/hosts/{hosts['kvm01'].pk}/maintenance/", {"dry_run": True}, format="json").json()
    move = next(m for m in after["plan"] if m["domain_name"] == "kvm01-vm001")
    assert move["target_name"] == "kvm02"
    assert "placement rule licensed" in move["why"]


def test_the_admin_makes_a_rule_audited_and_refuses_one_that_cannot_work(client, owner, hosts):
    client.force_login(owner)
    vms = f'["{uuid_of("kvm01-vm001")}", "{uuid_of("kvm02-vm001")}"]'
    bad = client.post(
        "/admin/maintenance/placementrule/add/",
        {"name": "bad", "kind": "pinned", "vms": vms, "enabled": "on", "description": ""},
    )
    assert bad.status_code == 200 and "A pinned rule needs at least one host" in bad.content.decode()

    made = client.post(
        "/admin/maintenance/placementrule/add/",
        {"name": "web", "kind": "pinned", "vms": vms, "hosts": [hosts["kvm03"].pk], "enabled": "on"},
    )
    assert made.status_code == 302, made.content.decode()[:2000]
    rule = PlacementRule.objects.get(name="web")
    assert list(rule.hosts.all()) == [hosts["kvm03"]] and rule.created_by_name == owner.username
    entry = AuditEntry.objects.get(action="rule")
    assert entry.message == "alice created placement rule web (pin to hosts: kvm01-vm001, kvm02-vm001 on kvm03)"


def test_an_operator_may_override_a_rule_with_a_reason_which_is_audited(api, operator, hosts):
    apart(api, operator, "kvm01-vm001", "kvm02-vm001")
    domain = Domain.objects.get(name="kvm01-vm001")
    body = {"domain": domain.pk, "target_host": hosts["kvm02"].pk, "mode": "live"}
    reason = "kvm03 is being re-cabled tonight"

    checked = api.post("/api/migrations/", {**body, "dry_run": True, "rule_override": reason}, format="json").json()
    rule = next(c for c in checked["checks"] if c["name"] == "placement_rules")
    assert rule["result"] == "warn"
    assert "rule db-replicas" in rule["message"] and f"The operator overrides it: {reason}" in rule["message"]

    made = api.post("/api/migrations/", {**body, "rule_override": reason}, format="json")
    assert made.status_code == 201, made.content
    assert made.json()["rule_override"] == reason
    request = AuditEntry.objects.get(action="request", domain_name="kvm01-vm001")
    assert request.message.endswith(f"against any placement rule it breaks, because: {reason}.")
    assert request.data["rule_override"] == reason
