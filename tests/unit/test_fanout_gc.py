"""The collector settings of the fan-out are the process's own again after it, also when
runs overlap (as under `tpdump serve`)."""

import gc
from pathlib import Path

from tpdump.runner import _FANOUT_GEN0, fanout_gc, release_memory


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


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_release_memory_hands_freed_heap_pages_back() -> None:
    """200 MB of 2 KB blocks (malloc's, not Python's small-object arenas), one in a
    hundred kept: free() alone cannot shrink a heap pinned by the survivors; the trim
    gives the free pages between them back."""
    blocks = [bytes(2048) for _ in range(100_000)]
    kept = blocks[::100]
    del blocks
    before = _rss_kb()
    assert release_memory() is True
    after = _rss_kb()
    assert before - after > 100_000, (before, after)
    assert len(kept) == 1000
