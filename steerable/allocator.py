"""Keep memory a CPU run frees for its next step, instead of handing it back to the kernel.

glibc's malloc serves blocks above its mmap threshold (at most 32 MiB) with fresh mappings that `free` unmaps,
and trims the heap's top as soon as enough of it is free. A training step on a CPU holds gigabytes of
activations and logits until its backward pass and then frees them, so the next step faults the same amount in
again, one zeroed 4 KiB page at a time: measured on the bundled model, a CLP step (16 rows, fp32) took 1.9
million minor faults, 7 GB faulted in, a third of the step in kernel time (benchmarks/rl_step.py). With mmap
off and trimming off the heap keeps what it grew to and later steps reuse it: 0.27 million faults per step
(what is left comes from blocks that do not fit the holes freed before them). The cost is that the process's resident memory stays at its peak, which a training or evaluation
process reaches anyway. Only glibc has these knobs (`mallopt`); elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# the largest value the int parameter takes: free heap is kept up to 2 GiB past the top
NEVER_TRIM = 2**31 - 1

_applied: str | None = None


def keep_freed_memory() -> str:
    """Switch glibc malloc to reuse freed memory (no mmap'd blocks, no heap trimming) for the rest of this
    process; returns what was done, for the run's hardware record. Idempotent."""
    global _applied
    if _applied is not None:
        return _applied
    libc = _glibc()
    if libc is None:
        _applied = f"unchanged ({platform.system()} without glibc malloc)"
    elif libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1:
        _applied = "glibc malloc keeps freed memory (mmap off, trim off)"
    else:
        _applied = "unchanged (glibc refused mallopt)"
    log.info("allocator: %s", _applied)
    return _applied


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
