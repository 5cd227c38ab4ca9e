"""What each model bench does first: log progress with timestamps, and skip cleanly when the shared
data it reads in place (../shared/data) is not on this machine."""

from __future__ import annotations

import logging
from pathlib import Path


def start_logging(*quiet: str) -> None:
    """INFO with timestamps for the benchmark's own progress; the chatty libraries at WARNING."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "datasets", "transformers", *quiet):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def missing_data(*paths: Path) -> bool:
    """True, after printing a SKIP line that names them, when any of `paths` is not a file."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"SKIP: {', '.join(missing)} not found; this benchmark needs ../shared/data next to the project")
    return bool(missing)


def cpu_label() -> str:
    """The CPU a timing was taken on, as the results name it: model, family and whether it has native
    bfloat16 (the figures of this project differ most by that)."""
    import platform

    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or platform.machine()
    flags = info.get("flags", "").split()
    simd = "avx512_bf16" if "avx512_bf16" in flags else "AVX2 only" if "avx2" in flags else "no AVX2"
    return f"{info.get('model name', platform.machine())} (family {info.get('cpu family', '?')}, {simd})"
