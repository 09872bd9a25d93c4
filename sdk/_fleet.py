"""The CPUs a bundle will run on (``Recipe.cpus``), this machine's CPU flags, and whether INT8 is exact on them.

x86 CPUs without VNNI (AVX2 only, or AVX-512 without VNNI) multiply uint8 x int8 pairs with
``vpmaddubsw``, whose 16-bit sums saturate: an INT8 model that is exact on an AVX-512 VNNI build machine
lost 10 top-1 points on an AVX2 box; under ``qemu-x86_64 -cpu EPYC`` the shipped digits CNN in
full-range U8S8 falls from 97.2 to 93.7 % (99.6 -> 94.1 % agreement with FP32).
VNNI (``vpdpbusd``) and AMX accumulate in 32 bits, ARM's widening multiplies cannot overflow. So a
fleet that may hold a CPU without VNNI needs INT8 whose products cannot saturate: 7-bit weights
(ONNX Runtime's ``reduce_range``, NNCF's overflow fix) or uint8 weights (ONNX Runtime's U8U8 kernels).

Ground floor: imports nothing of edgeship's but the errors.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import ConfigError

__all__ = ["CPU_FLAGS", "CPU_CLASSES", "Fleet", "cpu_flags", "fleet"]

#: the CPU features edgeship reports and decides on (x86 and ARM names as /proc/cpuinfo writes them)
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "fphp", "i8mm", "sve")

#: x86 flags whose INT8 dot products accumulate in 32 bits (no saturating 16-bit pair sums)
EXACT_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")

#: the CPU classes ``Recipe.cpus`` may name -> (description, whether INT8 u8 x s8 products may saturate there)
CPU_CLASSES: dict[str, tuple[str, bool]] = {
    "x86-64-v3": ("any x86-64 CPU with AVX2 (VNNI not assumed)", True),
    "avx512-vnni": ("x86-64 CPUs with AVX-512 VNNI or AVX-VNNI (Ice Lake / Zen 4 and later)", False),
    "amx": ("x86-64 CPUs with AMX-INT8 (Sapphire Rapids and later)", False),
    "arm64": ("64-bit ARM (NEON widening multiplies; not measured on ARM here)", False),
    "native": ("exactly this machine's CPU", False),  # decided from this machine's flags in fleet()
}


def cpu_flags(cpuinfo: str | None = None) -> list[str]:
    """The CPU features among ``CPU_FLAGS`` that /proc/cpuinfo lists (empty where it is unreadable)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    present: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present.update(value.split())
    return [f for f in CPU_FLAGS if f in present]


def int8_saturates_here(flags: Sequence[str] | None = None) -> bool:
    """Whether this (x86) CPU computes u8 x s8 INT8 products with saturating 16-bit pair sums."""
    flags = cpu_flags() if flags is None else list(flags)
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    return not any(f in flags for f in EXACT_INT8_FLAGS)


@dataclass(frozen=True)
class Fleet:
    """The declared CPUs of a bundle, resolved: which classes, and whether INT8 may saturate on one of them."""

    classes: tuple[str, ...]
    saturating: bool
    native_flags: tuple[str, ...] = ()  # this machine's flags when "native" was declared

    def describe(self) -> str:
        native = f"this machine ({', '.join(self.native_flags) or 'no flags'})"
        return "; ".join(native if c == "native" else CPU_CLASSES[c][0] for c in self.classes)

    def to_dict(self) -> dict[str, object]:
        return {"cpus": list(self.classes), "int8_may_saturate": self.saturating,
                "native_flags": list(self.native_flags) if "native" in self.classes else None,
                "description": self.describe()}


def check_cpus(cpus: str | Sequence[str]) -> tuple[str, ...]:
    """``Recipe.cpus`` as a tuple of known class names, else ConfigError listing them."""
    names = (cpus,) if isinstance(cpus, str) else tuple(cpus)
    if not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"Recipe.cpus must name one or more CPU classes of {sorted(CPU_CLASSES)}, got {cpus!r}")
    unknown = [n for n in names if n not in CPU_CLASSES]
    if unknown:
        raise ConfigError(f"Recipe.cpus names unknown CPU classes {unknown}; known: "
                          + ", ".join(f"{k} ({v[0]})" for k, v in CPU_CLASSES.items()))
    return tuple(dict.fromkeys(names))


def fleet(cpus: str | Sequence[str] = "x86-64-v3") -> Fleet:
    """Resolve ``Recipe.cpus``; "native" is decided by this machine's CPU flags."""
    classes = check_cpus(cpus)
    saturating = any(CPU_CLASSES[c][1] for c in classes)
    native: tuple[str, ...] = ()
    if "native" in classes:
        native = tuple(cpu_flags())
        saturating = saturating or int8_saturates_here(native)
    return Fleet(classes, saturating, native)
