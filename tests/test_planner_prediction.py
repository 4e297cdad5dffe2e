"""The evacuation planner times each move with the pre-flight's prediction:
a VM that dirties its memory takes longer than an idle one of the same size."""

import pytest

from maintenance.planner import MOVE_OVERHEAD_SECONDS, MiB, move_seconds, plan
from migrations_app import prediction
from tests.test_evacuation_planner import host, vm


def test_a_busy_vm_is_predicted_to_take_longer_than_an_idle_one_and_as_the_prediction_says():
    speed = 32 * MiB
    idle = vm(11, "idle", memory=512 * MiB)
    busy = vm(12, "busy", memory=512 * MiB, dirty_rate_bps=8 * MiB)
    result = plan([idle, busy], [host(1, "kvm01"), host(2, "kvm02"), host(3, "kvm03")], speed_bps=speed)

    seconds = {m["domain_name"]: m["predicted_seconds"] for m in result.moves}
    assert seconds["idle"] == round(MOVE_OVERHEAD_SECONDS + 16)
    expected = prediction.predict(512 * MiB, 8 * MiB, speed, 300, setup_seconds=0).seconds
    assert seconds["busy"] == round(MOVE_OVERHEAD_SECONDS + expected) > seconds["idle"] + 3


def test_a_vm_that_would_not_converge_is_timed_as_post_copy_moves_it():
    speed = 8 * MiB
    busy = vm(12, "busy", memory=256 * MiB, dirty_rate_bps=24 * MiB)
    post = prediction.predict_postcopy(256 * MiB, 24 * MiB, speed, setup_seconds=0)
    assert move_seconds(busy, 0, speed) == pytest.approx(MOVE_OVERHEAD_SECONDS + post.seconds)
    assert post.seconds == pytest.approx(32 + 32)
