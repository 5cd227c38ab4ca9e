"""Orchestration overhead of a self-refine run, and the cost of a resume that reuses everything.

For each preset, in one process against one Prefect server:
- a fresh 2-iteration run, timed end to end (from the flow call to its return);
- stage work = the sum of every stage function's own time (`stage_function_seconds`, measured by
  the stage runner around the stage function); everything else — Prefect flow/task runs, store
  bookkeeping, digesting and storing artifacts, reuse checks — is overhead;
- a resume of the finished run: every stage is reused (digests re-verified), timed the same way.

Targets (issue): overhead < 5% of wall time on the cpu preset; resume < 5% of the full run.

    python bench/orchestration.py [--presets tiny,cpu] [--iterations 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(preset: str, iterations: int) -> dict[str, float]:
    from sqlalchemy import func, select

    from selfrefine.flows.self_refine import resume, self_refine
    from selfrefine.storage.engine import default_store
    from selfrefine.storage.schema import Iteration, Metric, StageRun

    start = time.perf_counter()
    run_id = self_refine(preset=preset, n_iterations=iterations)
    full = time.perf_counter() - start
    store = default_store()
    with store.session() as s:
        work = s.scalar(select(func.sum(Metric.value)).join(StageRun, Metric.stage_run_id == StageRun.id)
                        .join(Iteration, StageRun.iteration_id == Iteration.id)
                        .where(Iteration.run_id == uuid.UUID(run_id),
                               Metric.name == "stage_function_seconds")) or 0.0
    start = time.perf_counter()
    resume(run_id)
    resumed = time.perf_counter() - start
    return {"full_s": full, "work_s": work, "overhead_s": full - work,
            "overhead_share": (full - work) / full, "resume_s": resumed, "resume_share": resumed / full}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,cpu", help="comma-separated presets; the RESULT line "
                                                               "reports the last one")
    parser.add_argument("--iterations", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: no usage heartbeats

    results = {}
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=120):
        # Convert the packaged and tiny models before timing: that is a one-off per machine.
        os.environ.setdefault("SELFREFINE_MODEL_CACHE", str(Path(tmp) / "models"))
        from selfrefine.models.loading import resolve_model

        for alias in ("tiny", "packaged"):
            resolve_model(alias)
        for preset in args.presets.split(","):
            os.environ["SELFREFINE_HOME"] = str(Path(tmp) / preset)
            results[preset] = r = measure(preset, args.iterations)
            print(f"{preset:>6}: full run {r['full_s']:7.1f}s  stage work {r['work_s']:7.1f}s  "
                  f"overhead {r['overhead_s']:6.1f}s ({100 * r['overhead_share']:.1f}%)  "
                  f"resume {r['resume_s']:6.1f}s ({100 * r['resume_share']:.1f}% of the full run)")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    last = results[args.presets.split(",")[-1]]
    print(f"RESULT overhead_share={last['overhead_share']:.4f} resume_share={last['resume_share']:.4f}")


if __name__ == "__main__":
    main()
