"""Placement rules in the planner, over facts built by hand: every plan obeys them."""

from maintenance.planner import APART, PINNED, TOGETHER, GiB, Guest, HostFacts, Pool, Rule, plan, rule_refusal

SHARED = Pool("shared", "/srv/share", 500 * GiB, shared=True)


def host(pk, name, committed=0, capacity=16 * GiB, **extra):
    return HostFacts(
        id=pk,
        name=name,
        memory_capacity=capacity,
        memory_committed=committed,
        pools={"shared": SHARED},
        bridges=frozenset({"br0"}),
        **extra,
    )


def uuid(pk):
    return f"00000000-0000-0000-0000-{pk:012d}"


def vm(pk, name, on=1, memory=GiB):
    return Guest(id=pk, name=name, uuid=uuid(pk), host_id=on, state="running", memory=memory)


HOSTS = [host(1, "kvm01"), host(2, "kvm02", committed=GiB), host(3, "kvm03", committed=2 * GiB)]


def test_without_rules_two_replicas_would_share_the_emptiest_host():
    # The control for the next test: the planner alone puts both on kvm02 (least committed).
    result = plan([vm(11, "db1"), vm(12, "db2")], HOSTS, exclude=[1])
    assert {m["target_name"] for m in result.moves} == {"kvm02"}


def test_an_apart_rule_puts_the_replicas_on_different_hosts():
    rule = Rule("db-replicas", APART, frozenset({uuid(11), uuid(12)}))
    result = plan([vm(11, "db1"), vm(12, "db2")], HOSTS, exclude=[1], rules=[rule])

    placed = {m["domain_name"]: m["target_name"] for m in result.moves}
    assert sorted(placed.values()) == ["kvm02", "kvm03"]
    assert any("placement rule db-replicas" in m["why"] for m in result.moves)


def test_an_apart_rule_counts_a_vm_that_stays_where_it_is():
    # db2 runs on kvm02 and does not move: db1 may not join it there, though kvm02 is emptiest.
    rule = Rule("db-replicas", APART, frozenset({uuid(11), uuid(12)}))
    where = {uuid(12): (2, "db2")}
    result = plan(
        [vm(11, "db1")],
        [host(1, "kvm01"), host(2, "kvm02"), host(3, "kvm03", committed=4 * GiB)],
        rules=[rule],
        where=where,
    )

    assert [m["target_name"] for m in result.moves] == ["kvm03"]


def test_a_vm_the_rules_leave_nowhere_to_go_is_unplaced_with_the_rules_name():
    rule = Rule("web-apart", APART, frozenset({uuid(11), uuid(12), uuid(13)}))
    where = {uuid(12): (2, "web2"), uuid(13): (3, "web3")}
    result = plan([vm(11, "web1")], HOSTS, rules=[rule], where=where)

    assert result.moves == []
    reason = result.unplaced[0]["reason"]
    assert "kvm02: rule web-apart keeps web1 apart from web2, which is on kvm02" in reason
    assert "kvm03: rule web-apart keeps web1 apart from web3, which is on kvm03" in reason


def test_a_together_rule_sends_the_second_vm_after_the_first():
    # app (the larger, placed first) goes to kvm02; without the rule cache would then take the
    # emptier kvm03, with it cache follows app.
    hosts = [host(1, "kvm01"), host(2, "kvm02", committed=GiB), host(3, "kvm03", committed=GiB)]
    rule = Rule("app-cache", TOGETHER, frozenset({uuid(11), uuid(12)}))
    guests = [vm(11, "app", memory=3 * GiB), vm(12, "cache", memory=2 * GiB)]

    without = plan(guests, hosts, exclude=[1])
    assert len({m["target_name"] for m in without.moves}) == 2  # least committed spreads them
    result = plan(guests, hosts, exclude=[1], rules=[rule])
    assert len({m["target_name"] for m in result.moves}) == 1


def test_a_together_rule_keeps_a_vm_with_the_ones_that_stay():
    rule = Rule("app-cache", TOGETHER, frozenset({uuid(11), uuid(12)}))
    where = {uuid(12): (3, "cache")}
    result = plan([vm(11, "app")], HOSTS, rules=[rule], where=where)

    # kvm02 is emptier, but cache runs on kvm03.
    assert [m["target_name"] for m in result.moves] == ["kvm03"]


def test_a_pinned_vm_goes_only_to_its_hosts():
    rule = Rule("licensed", PINNED, frozenset({uuid(11)}), frozenset({3}))
    result = plan([vm(11, "oracle")], HOSTS, rules=[rule])
    assert [m["target_name"] for m in result.moves] == ["kvm03"]

    nowhere = plan([vm(11, "oracle")], HOSTS, rules=[Rule("licensed", PINNED, frozenset({uuid(11)}), frozenset({1}))])
    assert nowhere.moves == []
    assert "rule licensed pins oracle to kvm01" in nowhere.unplaced[0]["reason"]


def test_a_return_home_that_would_break_a_rule_is_refused():
    # web1 comes back to kvm01, where web2 now runs: the rule keeps it away.
    rule = Rule("web-apart", APART, frozenset({uuid(11), uuid(12)}))
    where = {uuid(12): (1, "web2")}
    result = plan([vm(11, "web1", on=2)], HOSTS, exclude=[2, 3], rules=[rule], where=where)
    assert result.moves == []
    assert "rule web-apart" in result.unplaced[0]["reason"]


def test_a_single_move_is_checked_against_the_rules():
    hosts = {h.id: h for h in HOSTS}
    apart = Rule("db-replicas", APART, frozenset({uuid(11), uuid(12)}))
    where = {uuid(11): (1, "db1"), uuid(12): (2, "db2")}

    assert rule_refusal([apart], uuid(11), "db1", hosts[2], where, hosts) == (
        "rule db-replicas keeps db1 apart from db2, which is on kvm02"
    )
    assert rule_refusal([apart], uuid(11), "db1", hosts[3], where, hosts) == ""
    together = Rule("pair", TOGETHER, frozenset({uuid(11), uuid(12)}))
    assert "rule pair keeps db1 together with db2, which is on kvm02" == rule_refusal(
        [together], uuid(11), "db1", hosts[3], where, hosts
    )
    assert rule_refusal([together], uuid(11), "db1", hosts[2], where, hosts) == ""


def test_a_move_tried_again_mid_evacuation_follows_the_group_not_the_host_being_emptied():
    # kvm01 is in maintenance; app went to kvm03 already, db is still on kvm01 (it will follow);
    # cache's first target refused it and it is planned again: it joins app on kvm03.
    hosts = [host(1, "kvm01", maintenance=True), host(2, "kvm02"), host(3, "kvm03", committed=4 * GiB)]
    rule = Rule("stack", TOGETHER, frozenset({uuid(11), uuid(12), uuid(13)}))
    where = {uuid(11): (3, "app"), uuid(13): (1, "db")}
    result = plan([vm(12, "cache")], hosts, rules=[rule], where=where)
    assert [m["target_name"] for m in result.moves] == ["kvm03"]

    # With kvm01 out of maintenance db is where it runs, and the group cannot be joined.
    hosts[0] = host(1, "kvm01")
    stuck = plan([vm(12, "cache")], hosts, rules=[rule], where=where, exclude=[1])
    assert stuck.moves == [] and "rule stack keeps cache together with" in stuck.unplaced[0]["reason"]
