"""The balance planner, over facts built by hand: fewest moves, least memory,
the cool-down, the capacity model and the placement rules."""

import itertools

from maintenance.planner import APART, PINNED, GiB, Guest, HostFacts, MiB, Pool, Rule, balance

SHARED = Pool("shared", "/srv/share", 500 * GiB, shared=True)


def host(pk, name, capacity=8 * GiB, committed=0, **extra):
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


def vm(pk, name, on, memory=GiB, **extra):
    return Guest(id=pk, name=name, uuid=uuid(pk), host_id=on, state="running", memory=memory, **extra)


def uneven():
    """Three hosts of 8 GiB, six running 1 GiB guests all on kvm01 (75 %, the others 0 %)."""
    guests = [vm(10 + i, f"g{i}", 1) for i in range(6)]
    hosts = [host(1, "kvm01", committed=6 * GiB), host(2, "kvm02"), host(3, "kvm03")]
    return guests, hosts


def fewest_moves_by_search(guests, hosts, threshold):
    """The minimum, by trying every placement (3^6 of them): the figure the planner must reach."""
    capacity = {h.id: h.memory_capacity for h in hosts}
    mean = sum(g.memory for g in guests) / sum(capacity.values())
    best = None
    for placement in itertools.product([h.id for h in hosts], repeat=len(guests)):
        load = dict.fromkeys(capacity, 0)
        for g, where in zip(guests, placement, strict=True):
            load[where] += g.memory
        if all(abs(load[h] / capacity[h] - mean) <= threshold / 100 + 1e-9 for h in capacity):
            moves = sum(1 for g, where in zip(guests, placement, strict=True) if where != g.host_id)
            best = moves if best is None else min(best, moves)
    return best


def test_an_uneven_cluster_is_balanced_with_the_fewest_moves():
    guests, hosts = uneven()
    result = balance(guests, hosts, threshold=10)

    # kvm01 is at 75 % against a mean of 25 %: each guest is 12.5 points, so every host must hold
    # exactly two (one or three would be 12.5 off): four guests leave kvm01, and no fewer will do.
    assert fewest_moves_by_search(guests, hosts, 10) == 4
    assert len(result.moves) == 4
    assert sorted(m["target_name"] for m in result.moves) == ["kvm02", "kvm02", "kvm03", "kvm03"]
    assert {m["source_name"] for m in result.moves} == {"kvm01"}
    assert result.balanced
    assert result.mean["memory"] == 25.0
    assert result.before["outside"] == ["kvm01", "kvm02", "kvm03"]
    assert result.before["memory_max_deviation"] == 50.0
    assert result.after["outside"] == [] and result.after["memory_max_deviation"] == 0.0
    assert result.memory_moved == 4 * GiB
    move = result.moves[0]
    assert move["mode"] == "live" and move["predicted_seconds"] >= 1
    assert "kvm01 has 75 % of its memory committed" in move["why"]
    assert result.predicted_seconds >= max(m["predicted_seconds"] for m in result.moves)


def test_a_balanced_cluster_needs_no_move():
    guests = [vm(11, "a", 1), vm(12, "b", 2), vm(13, "c", 3)]
    hosts = [host(1, "kvm01", committed=GiB), host(2, "kvm02", committed=GiB), host(3, "kvm03", committed=GiB)]
    result = balance(guests, hosts)
    assert result.moves == [] and result.balanced


def test_vcpus_are_balanced_too():
    # Memory is even (one 1 GiB guest each), vCPUs are not: kvm01 runs 8 of its 16.
    guests = [vm(11, "wide", 1, vcpus=4), vm(12, "wide2", 1, vcpus=4), vm(13, "b", 2, vcpus=1), vm(14, "c", 3)]
    hosts = [
        host(1, "kvm01", committed=2 * GiB, vcpu_capacity=16, vcpus_committed=8),
        host(2, "kvm02", committed=GiB, vcpu_capacity=16, vcpus_committed=1),
        host(3, "kvm03", committed=GiB, vcpu_capacity=16, vcpus_committed=1),
    ]
    result = balance(guests, hosts, threshold=15)
    assert [m["domain_name"] for m in result.moves] == ["wide"]
    assert result.after["vcpu_max_deviation"] < result.before["vcpu_max_deviation"]
    assert result.balanced


def test_between_moves_that_fix_as_much_the_smaller_vm_moves():
    # kvm01 70 %, kvm02 30 %; mean 50, band ±15. Moving small (1 GiB) or big (2 GiB) both bring
    # kvm01 within: the plan moves the smaller one; moving base (4 GiB) would overshoot.
    guests = [vm(11, "small", 1), vm(12, "big", 1, memory=2 * GiB), vm(13, "base", 1, memory=4 * GiB)]
    hosts = [host(1, "kvm01", 10 * GiB, 7 * GiB), host(2, "kvm02", 10 * GiB, 3 * GiB)]
    result = balance(guests, hosts, threshold=15)
    assert [m["domain_name"] for m in result.moves] == ["small"]
    assert result.balanced


def test_vms_balancing_moved_lately_stay_where_they_are():
    guests, hosts = uneven()
    cooling = frozenset(uuid(10 + i) for i in range(4))
    result = balance(guests, hosts, cooling=cooling)

    assert {m["domain_uuid"] for m in result.moves}.isdisjoint(cooling)
    assert len(result.moves) == 2  # only g4 and g5 may move
    assert sorted(c["domain_name"] for c in result.cooling_down) == ["g0", "g1", "g2", "g3"]
    assert not result.balanced and "kvm01" in result.after["outside"]


def test_a_move_the_capacity_model_refuses_is_not_planned():
    # The cluster is nearly full: kvm01 over-committed (110 %), kvm02 and kvm03 near their capacity.
    def cluster(kvm02_committed):
        guests = [vm(11, "a", 1, memory=2 * GiB), vm(12, "b", 1, memory=9 * GiB)]
        return guests, [
            host(1, "kvm01", 10 * GiB, 11 * GiB),
            host(2, "kvm02", 10 * GiB, kvm02_committed),
            host(3, "kvm03", 10 * GiB, 9 * GiB + 512 * MiB),
        ]

    # With 8 GiB committed on kvm02, a (2 GiB) fits exactly and the move brings both hosts in.
    fits = balance(*cluster(8 * GiB), threshold=10)
    assert [(m["domain_name"], m["target_name"]) for m in fits.moves] == [("a", "kvm02")]
    # With 8.5 GiB the same move would bring both within the band too, but kvm02 has no room.
    full = balance(*cluster(8 * GiB + 512 * MiB), threshold=10)
    assert full.moves == []
    assert not full.balanced and "kvm01" in full.after["outside"]


def test_hosts_in_maintenance_or_offline_are_neither_weighed_nor_targets():
    guests, hosts = uneven()
    hosts[2] = host(3, "kvm03", maintenance=True)
    result = balance(guests, hosts)
    # kvm01 and kvm02 alone: mean 37.5 %, three guests each.
    assert [m["target_name"] for m in result.moves] == ["kvm02"] * 3
    assert [h["host_name"] for h in result.after["hosts"]] == ["kvm01", "kvm02"]


def test_balancing_obeys_the_placement_rules():
    guests, hosts = uneven()
    pinned = Rule("licensed", PINNED, frozenset({uuid(10), uuid(11)}), frozenset({1}))
    apart = Rule("replicas", APART, frozenset({uuid(12), uuid(13), uuid(20)}))
    other = vm(20, "r3", 2)  # runs on kvm02: g2 and g3 may not join it there
    hosts[1] = host(2, "kvm02", committed=GiB)
    result = balance([*guests, other], hosts, rules=[pinned, apart])

    # Without rules the plan takes g0, g1 and g2 (equal guests, by name).
    assert [m["domain_name"] for m in balance([*guests, other], hosts).moves] == ["g0", "g1", "g2"]
    # g0 and g1 are pinned to kvm01; g2 may not join r3 on kvm02, and g3 then has no host
    # free of its replicas: g4 and g5 make up the rest.
    moved = {m["domain_name"]: m["target_name"] for m in result.moves}
    assert moved == {"g2": "kvm03", "g4": "kvm02", "g5": "kvm03"}
    assert "placement rule replicas" in result.moves[0]["why"]
    assert result.balanced


def test_a_host_on_the_edge_of_the_band_is_within_it():
    # Mean 35 %, kvm01 at 45 % and kvm02 at 25 %: 10 points each way, exactly the threshold.
    guests = [vm(11, "a", 1, memory=4500 * MiB), vm(12, "b", 2, memory=2500 * MiB)]
    hosts = [host(1, "kvm01", 10000 * MiB, 4500 * MiB), host(2, "kvm02", 10000 * MiB, 2500 * MiB)]
    result = balance(guests, hosts, threshold=10)
    assert result.moves == [] and result.balanced and result.before["outside"] == []
