"""What this machine's CPU can do, for defaults that depend on it (``trainer=cpu`` precision)."""

from __future__ import annotations

import functools
from pathlib import Path

# Instructions that compute bf16 natively. Without them oneDNN emulates bf16, slower than fp32.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# What oneDNN needs to emulate bf16 at all ("avx512_core"): on a CPU without these (AVX2 only,
# e.g. AMD Zen 2/3 and most laptops) its bf16 LSTM kernel does not exist, and nn.LSTM under bf16
# autocast fails with "could not create a primitive descriptor for the LSTM forward ...".
AVX512_CORE_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from ``/proc/cpuinfo`` (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_precision() -> str:
    """``bf16-mixed`` on CPUs with native bf16 arithmetic, else ``32-true``.

    On such CPUs bf16 autocast with batch slices makes the seed LSTM ~1.8x faster per step at
    the same 3-seed accuracy (docs/benchmarks.md); elsewhere bf16 would only be slower.
    """
    return "bf16-mixed" if cpu_flags() & set(NATIVE_BF16_FLAGS) else "32-true"


def cpu_bf16_problem(flags: frozenset[str] | None = None) -> str | None:
    """Why bf16 autocast cannot train the recurrent models on this CPU, or None when it can (or
    when the CPU's flags are unknown, e.g. macOS: then torch decides)."""
    flags = cpu_flags() if flags is None else flags
    if not flags or flags & set(NATIVE_BF16_FLAGS) or set(AVX512_CORE_FLAGS) <= flags:
        return None
    return "this CPU has no AVX-512, which oneDNN's bf16 kernels (the LSTM's among them) need"


def release_freed_memory() -> None:
    """Hand memory the allocator keeps after a run back to the OS (glibc ``malloc_trim``).

    Why: the jobs of a multirun share one process, and glibc keeps each run's freed heap (in the
    arenas of the batch-slice threads too) for reuse; measured over five different models,
    the resident set after each job fell from 1.6 GB to 0.9 GB with this call. A no-op on other
    C libraries.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None; looked up once (``find_library`` may run ``ldconfig``)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None
