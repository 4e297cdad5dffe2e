"""The prediction of a live migration: pure arithmetic over memory, dirty rate, sending rate and downtime."""

import pytest

from migrations_app import prediction as pr
from migrations_app.policies import get_policy

MiB = 1024 * 1024


def test_an_idle_guest_takes_one_pass_of_its_memory_and_a_short_pause():
    p = pr.predict(256 * MiB, 0, 32 * MiB, 100, setup_seconds=1)
    assert p.converges
    assert p.seconds == pytest.approx(1 + 8, abs=0.01)
    # As libvirt counts them: the synchronisation before the first pass, the pass, the (empty) stop-and-copy.
    assert p.passes == 3
    assert p.downtime_ms == pr.SWITCHOVER_MS


def test_a_guest_dirtying_a_quarter_of_the_rate_converges_in_a_few_passes():
    # 384 MiB at 32 MiB/s: 12 s; then 3 s, 0.75 s, 0.19 s, 0.05 s of dirtied pages: the last fits in 100 ms.
    p = pr.predict(384 * MiB, 8 * MiB, 32 * MiB, 100, setup_seconds=0)
    assert p.converges
    assert p.passes == 6
    assert p.seconds == pytest.approx(12 + 3 + 0.75 + 0.1875 + 0.046875, rel=1e-3)
    assert p.downtime_ms == round(0.046875 * 1000) + pr.SWITCHOVER_MS
    assert pr.sentence(p) == "Expected: about 16 s, 6 passes, ~77 ms paused."
    # QEMU sends the stop-and-copy without the bandwidth limit: at 320 MiB/s the pause is shorter.
    assert pr.predict(384 * MiB, 8 * MiB, 32 * MiB, 100, final_bps=320 * MiB).downtime_ms == 5 + pr.SWITCHOVER_MS


def test_a_guest_dirtying_faster_than_the_link_does_not_converge_and_says_what_to_do():
    p = pr.predict(384 * MiB, 24 * MiB, 8 * MiB, 100)
    assert not p.converges
    assert "dirties 24.0 MiB/s while 8.0 MiB/s" in p.why
    assert pr.sentence(p, bandwidth_mib=8) == (
        "Will not converge at 8 MiB/s: the guest dirties 24 MiB/s — choose Make it converge, raise the "
        "bandwidth, or move it cold."
    )


def test_a_guest_that_nearly_keeps_up_converges_only_when_the_policy_allows_more_downtime():
    strict, balanced = get_policy("strict"), get_policy("default")
    args = (384 * MiB, 7 * MiB, 8 * MiB)
    assert not pr.predict(*args, strict.downtime_at, deadline_seconds=strict.deadline_seconds).converges
    # 7/8: what is left shrinks by 1/8 a pass; after 30 s Balanced allows 1 s (8 MiB), reached in time.
    slow = pr.predict(*args, balanced.downtime_at, deadline_seconds=balanced.deadline_seconds, max_passes=60)
    assert slow.converges and slow.passes > 10


def test_zero_pages_cost_the_first_pass_next_to_nothing():
    # A guest of which a quarter holds data: 64 MiB on the wire at 16 MiB/s, the rest only read.
    p = pr.predict(256 * MiB, 0, 16 * MiB, 300, wire_share=0.25, setup_seconds=0)
    assert p.seconds == pytest.approx(4 + 192 * MiB / pr.ZERO_SCAN_BPS)


def test_the_dirtied_part_of_a_pass_is_capped_by_the_memory():
    # 16 MiB dirtied at 64 MiB/s over a 16 s pass cannot exceed the 16 MiB there is.
    p = pr.predict(16 * MiB, 64 * MiB, 1 * MiB, 100, max_passes=3)
    assert not p.converges and p.passes == 4
    assert p.seconds == pytest.approx(pr.SETUP_SECONDS + 16 + 16 + 16)


def test_auto_converge_slows_the_guest_until_it_converges_and_says_how_much():
    plain = pr.predict(384 * MiB, 24 * MiB, 16 * MiB, 300)
    throttled = pr.predict(384 * MiB, 24 * MiB, 16 * MiB, 300, auto_converge=True)
    assert not plain.converges
    assert throttled.converges
    assert 50 <= throttled.throttle_percent <= 99
    assert throttled.method == pr.AUTO_CONVERGE


def test_post_copy_always_ends_after_its_passes_with_a_short_pause():
    p = pr.predict_postcopy(384 * MiB, 24 * MiB, 8 * MiB, switch_pass=2, setup_seconds=0)
    assert p.converges and p.passes == 3
    # 48 s for all memory, then what was dirtied meanwhile (all 384 MiB at most) once more.
    assert p.seconds == pytest.approx(48 + 48)
    assert p.downtime_ms == pr.SWITCHOVER_MS


def test_automatic_picks_plain_then_auto_converge_then_post_copy_then_refuses():
    def choose(dirty_mib, bw_mib, postcopy=True):
        args = (384 * MiB, dirty_mib * MiB, bw_mib * MiB)
        return pr.choose(
            pr.predict(*args, 300),
            pr.predict(*args, 300, auto_converge=True),
            pr.predict_postcopy(*args) if postcopy else None,
        )

    assert choose(0, 32).method == pr.PRECOPY
    assert choose(8, 32).method == pr.PRECOPY
    assert choose(30, 32).method == pr.AUTO_CONVERGE  # a light throttle is enough
    picked = choose(24, 8)
    assert picked.method == pr.POSTCOPY and "post-copy" in picked.reason
    refused = choose(24, 8, postcopy=False)
    assert refused.method == pr.COLD and "move it cold" in refused.reason


def test_figures_carry_their_source_and_age():
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 1, 1, tzinfo=UTC)
    f = pr.Figure(8 * MiB, "migration #3", now - timedelta(seconds=90))
    assert f.as_dict(now) == {
        "value": 8 * MiB,
        "source": "migration #3",
        "measured_at": (now - timedelta(seconds=90)).isoformat(),
        "age_seconds": 90,
    }


def test_the_error_is_relative_to_what_happened():
    assert pr.error_ratio(12.5, 10) == pytest.approx(0.25)
    assert pr.error_ratio(None, 10) is None and pr.error_ratio(3, 0) is None
