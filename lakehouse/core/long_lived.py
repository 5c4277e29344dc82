"""Objects that live as long as the process, kept out of the garbage collector's full scans.

A code location's definitions and dbt's parsed manifest are a few hundred thousand objects that
never die; every full collection walks them all (0.1-0.5 s each, a few in a gold run).
`gc.freeze()` moves everything alive now out of the collector's generations, garbage included:
a frozen reference cycle is never collected, nor is what it holds (an unclosed DuckDB connection
keeps its file locked), so a freeze after the process has done work collects first. At exit
everything is unfrozen, so the interpreter's last collection frees it as before (extension
modules such as DuckDB's report the objects still alive at that point as leaks).
"""

from __future__ import annotations

import atexit
import gc

_unfreeze_at_exit = False


def freeze(*, collect: bool) -> None:
    """Everything alive now lives as long as the process: out of the full scans. `collect`:
    collect the garbage first (0.2-0.5 s; an import leaves next to none)."""
    global _unfreeze_at_exit
    if collect:
        gc.collect()
    gc.freeze()
    if not _unfreeze_at_exit:
        atexit.register(gc.unfreeze)
        _unfreeze_at_exit = True
