"""What this machine's CPU is, as far as float results and speed depend on it (Linux /proc/cpuinfo)."""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# The x86 instruction sets oneDNN picks its float kernels by: two hosts that differ in these may round
# differently, so float32 training is bit-identical only between hosts of the same kind.
KERNEL_ISAS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def _cpuinfo(cpuinfo: str | None) -> str:
    if cpuinfo is not None:
        return cpuinfo
    return CPUINFO.read_text() if CPUINFO.exists() else ""


def _first(cpuinfo: str, key: str) -> str:
    """The value of the first `key : value` line, "" if none."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return ""


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags (x86 `flags`; empty on other machines or without /proc)."""
    return frozenset(_first(_cpuinfo(cpuinfo), "flags").split())


def cpu_kind(cpuinfo: str | None = None) -> str:
    """The CPU model and the kernel-relevant instruction sets, e.g. `AMD EPYC (avx2 fma avx512f avx512_bf16)`."""
    text = _cpuinfo(cpuinfo)
    flags = cpu_flags(text)
    isas = " ".join(isa for isa in KERNEL_ISAS if isa in flags)
    return f"{_first(text, 'model name') or 'unknown CPU'} ({isas or 'no x86 vector flags'})"
