"""The placement planner, over facts built by hand: where each VM goes and why."""

from maintenance.planner import DEFAULT_SPEED_BPS, Disk, GiB, Guest, HostFacts, MiB, Pool, plan

SHARED = Pool("shared", "/srv/share", 500 * GiB, shared=True)


def host(pk, name, committed=0, capacity=16 * GiB, **extra):
    extra.setdefault("pools", {"shared": SHARED, "local": Pool("local", "/var/lib/libvirt/images", 100 * GiB)})
    extra.setdefault("bridges", frozenset({"br0"}))
    return HostFacts(id=pk, name=name, memory_capacity=capacity, memory_committed=committed, **extra)


def vm(pk, name, memory=GiB, state="running", pool="shared", size=10 * GiB, **extra):
    extra.setdefault("bridges", frozenset({"br0"}))
    return Guest(
        id=pk,
        name=name,
        uuid=f"00000000-0000-0000-0000-{pk:012d}",
        host_id=1,
        state=state,
        memory=memory,
        disks=(Disk(f"/x/{name}.qcow2", pool, size),),
        **extra,
    )


def test_each_vm_goes_to_the_host_with_the_least_committed_memory():
    hosts = [host(1, "kvm01", 4 * GiB), host(2, "kvm02", 6 * GiB), host(3, "kvm03", 2 * GiB)]
    result = plan([vm(11, "a", 3 * GiB), vm(12, "b", 3 * GiB), vm(13, "c", GiB)], hosts)

    placed = {m["domain_name"]: m["target_name"] for m in result.moves}
    # a (3 GiB) to kvm03 (2 GiB committed, 5 with a); b to kvm03 again (5 < kvm02's 6);
    # then c to kvm02 (6) rather than kvm03 (8). The VM's own host is never a target.
    assert placed == {"a": "kvm03", "b": "kvm03", "c": "kvm02"}
    assert all(m["mode"] == "live" and m["storage"] == "shared" for m in result.moves)
    assert "least committed memory" in result.moves[0]["why"]
    assert not result.unplaced


def test_a_vm_that_fits_nowhere_is_unplaced_with_each_hosts_reason():
    hosts = [
        host(1, "kvm01"),
        host(2, "kvm02", committed=15 * GiB),
        host(3, "kvm03", maintenance=True),
        host(4, "kvm04", online=False, status="offline"),
        host(5, "kvm05", cpu_arch="aarch64"),
        host(6, "kvm06", bridges=frozenset()),
    ]
    result = plan([vm(11, "big", 2 * GiB)], hosts)

    assert result.moves == []
    reason = result.unplaced[0]["reason"]
    assert "kvm02: it has 1.0 GiB of memory room and big needs 2.0 GiB" in reason
    assert "kvm03: it is in maintenance" in reason
    assert "kvm04: it is offline" in reason
    assert "kvm05: it is an aarch64 host" in reason
    assert "kvm06: it has no bridge br0" in reason


def test_a_disk_on_local_storage_is_copied_into_a_pool_with_room():
    small = Pool("local", "/var/lib/libvirt/images", 5 * GiB)
    roomy = Pool("bulk", "/bulk", 50 * GiB)
    hosts = [host(1, "kvm01"), host(2, "kvm02", pools={"local": small, "bulk": roomy})]
    result = plan([vm(11, "db", pool="local", size=8 * GiB)], hosts)

    move = result.moves[0]
    assert (move["storage"], move["target_pool"]) == ("copy", "bulk")
    assert "copied into pool bulk" in move["why"]
    # The prediction counts the 8 GiB copied, not only the 1 GiB of memory.
    assert move["predicted_seconds"] >= (8 + 1) * GiB / DEFAULT_SPEED_BPS


def test_shut_off_vms_move_their_definition_only_on_shared_storage():
    hosts = [host(1, "kvm01"), host(2, "kvm02")]
    result = plan([vm(11, "off-shared", state="shutoff"), vm(12, "off-local", state="shutoff", pool="local")], hosts)

    assert [(m["domain_name"], m["mode"], m["storage"]) for m in result.moves] == [("off-shared", "cold", "shared")]
    assert result.unplaced == []
    assert result.staying[0]["domain_name"] == "off-local"
    assert "stays on kvm01" in result.staying[0]["reason"]


def test_a_live_move_needs_the_same_cpu_vendor_and_no_vm_of_that_name():
    hosts = [
        host(1, "kvm01", cpu_vendor="Intel"),
        host(2, "kvm02", cpu_vendor="AMD"),
        host(3, "kvm03", domain_names=frozenset({"web"})),
    ]
    result = plan([vm(11, "web")], hosts)

    reason = result.unplaced[0]["reason"]
    assert "kvm02: its CPUs are AMD, not Intel" in reason
    assert "kvm03: it already has a VM named web" in reason


def test_the_predicted_total_follows_the_per_host_limits():
    one_at_a_time = [host(1, "kvm01", max_outgoing=1), host(2, "kvm02"), host(3, "kvm03")]
    two_at_a_time = [host(1, "kvm01", max_outgoing=2), host(2, "kvm02"), host(3, "kvm03")]
    guests = [vm(10 + i, f"g{i}", 512 * MiB) for i in range(4)]

    serial, parallel = plan(guests, one_at_a_time), plan(guests, two_at_a_time)

    each = serial.moves[0]["predicted_seconds"]
    assert serial.predicted_seconds == 4 * each
    assert parallel.predicted_seconds == 2 * each


def test_hosts_in_exclude_are_never_chosen():
    hosts = [host(1, "kvm01"), host(2, "kvm02"), host(3, "kvm03", committed=8 * GiB)]
    result = plan([vm(11, "web")], hosts, exclude={2})
    assert result.moves[0]["target_name"] == "kvm03"


def local(volumes=(), room=100 * GiB, name="local"):
    return Pool(name, "/var/lib/libvirt/images", room, volumes=frozenset(volumes))


def test_a_copy_never_goes_into_a_pool_holding_a_same_named_volume_without_saying_so():
    guest = vm(11, "db01", pool="local")
    crowded = host(2, "kvm02", pools={"local": local({"db01.qcow2"}), "spare": local(name="spare")})
    result = plan([guest], [host(1, "kvm01"), crowded])

    [move] = result.moves
    assert move["target_pool"] == "spare"
    assert (
        "Pool local there already holds db01.qcow2" in move["why"] and "so the disks go into pool spare" in move["why"]
    )
    assert "replace_own_leftovers" not in move

    # With no other pool, the host is refused, naming the volume.
    only = host(2, "kvm02", pools={"local": local({"db01.qcow2"})})
    result = plan([guest], [host(1, "kvm01"), only])
    assert result.moves == []
    assert "kvm02: its pool local already holds a volume named db01.qcow2" in result.unplaced[0]["reason"]


def test_a_return_removes_the_vms_own_leftover_first_and_says_so():
    mine = vm(11, "db01", pool="local", own_leftovers=frozenset({(1, "local", "db01.qcow2")}))
    home = host(1, "kvm01", pools={"local": local({"db01.qcow2"})})
    away = host(2, "kvm02")
    guest_away = Guest(**{**mine.__dict__, "host_id": 2})

    result = plan([guest_away], [home, away], replace_own_leftovers=True)

    [move] = result.moves
    assert move["target_name"] == "kvm01" and move["target_pool"] == "local"
    assert move["replace_own_leftovers"] is True
    assert "Its own leftover db01.qcow2 in pool local" in move["why"]
    # Someone else's volume of that name is never removed: refused instead.
    stranger = Guest(**{**guest_away.__dict__, "own_leftovers": frozenset()})
    result = plan([stranger], [home, away], replace_own_leftovers=True)
    assert result.moves == [] and "already holds a volume named db01.qcow2" in result.unplaced[0]["reason"]
