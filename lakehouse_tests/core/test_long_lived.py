"""A freeze after the process has done work collects first: garbage frozen is never collected,
nor what it holds (a connection left open keeps its file locked)."""

from __future__ import annotations

import gc
import weakref

from lakehouse.core import long_lived


class _Holder:
    other: _Holder


def test_a_freeze_after_work_frees_the_garbage_it_would_otherwise_keep() -> None:
    closed: list[str] = []
    gc.disable()  # no collection of its own between the cycle's death and the freeze
    try:
        first, second = _Holder(), _Holder()
        first.other, second.other = second, first  # a reference cycle: only the collector frees it
        weakref.finalize(first, closed.append, "closed")
        del first, second
        assert closed == []
        long_lived.freeze(collect=True)
        assert closed == ["closed"]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.enable()
