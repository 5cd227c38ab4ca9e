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


def quiet_progress_bars() -> None:
    """datasets' and transformers' progress bars off: a bench prints its figures and the recipes'
    timestamped progress log, not a bar per map or download."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def missing_data(*paths: Path) -> bool:
    """True, after printing a SKIP line that names them, when any of `paths` is not a file."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"SKIP: {', '.join(missing)} not found; this benchmark needs ../shared/data next to the project")
    return bool(missing)


def cpu_label() -> str:
    """The CPU a timing was taken on, as the results name it: model, family and whether it has native
    bfloat16 (`bf16_supported`, the test the models' dtype choice uses; the figures differ most by it)."""
    import platform

    from selfrefine.models.loading import bf16_supported

    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    bf16 = "native bf16" if bf16_supported() else "AVX2 only, no native bf16" if "avx2" in info.get("flags", "") \
        else "no native bf16"
    return (f"{info.get('model name') or platform.processor() or platform.machine()} "
            f"(family {info.get('cpu family', '?')}, {bf16})")


def reading_label() -> str:
    """What a results section says a reading was taken on: the UTC day, the CPU, the precision the
    models ran in (float32 wherever the CPU has no native bfloat16) and the cores."""
    import os
    import time

    from selfrefine.models.loading import bf16_supported

    precision = "bfloat16 autocast" if bf16_supported() else "float32"
    return f"{time.strftime('%Y-%m-%d', time.gmtime())}, {cpu_label()}, {precision}, {os.cpu_count()} cores"


def command_line() -> str:
    """The command that ran this bench, as its results section quotes it: `python bench/<script> <args>`."""
    import sys

    return " ".join(["python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def publish(section: str, heading: str, about: str, lines: list[str], *, smoke: bool) -> None:
    """Print a bench's table `lines` and, unless it was a smoke run (--limit-train/--n-eval), make them
    its section of bench/RESULTS.md: `heading`, then the command and what it ran on followed by `about`."""
    print("\n".join(lines))
    if smoke:
        print("smoke run (--limit-train/--n-eval): bench/RESULTS.md left unchanged")
        return
    from results_file import write_section

    write_section(section, [f"## {heading}", "", f"`{command_line()}` — {reading_label()}{about}", "", *lines])
