"""The collector settings of the fan-out are the process's own again after it, also when
runs overlap (as under `tpdump serve`)."""

import gc

from tpdump.runner import _FANOUT_GEN0, fanout_gc


def test_fan_out_freezes_and_raises_the_threshold_then_undoes_both() -> None:
    before = gc.get_threshold()
    keep = [object() for _ in range(10)]
    with fanout_gc():
        assert gc.get_threshold()[0] == max(before[0], _FANOUT_GEN0)
        assert gc.get_freeze_count() >= len(keep)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_overlapping_runs_restore_the_original_whichever_ends_first() -> None:
    before = gc.get_threshold()
    first, second = fanout_gc(), fanout_gc()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first run ends while the second is still out
    assert gc.get_threshold()[0] == max(before[0], _FANOUT_GEN0)
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_an_error_in_the_fan_out_still_undoes_it() -> None:
    before = gc.get_threshold()
    try:
        with fanout_gc():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
