"""Store bookkeeping and lineage query cost on a synthetic run, measured in one process.

A synthetic run of N iterations × 6 stages × 4 output artifacts goes through the real stage
runner on SQLite (each stage uses the previous stage's 4 outputs, the first stage of an
iteration the last stage's outputs of the iteration before). Reported:

- bookkeeping per stage run: wall time of `run_stage` around a stage function that only writes
  four tiny files (key, claim, heartbeat thread, digest, rename, registration, edges);
- lineage query: `lineage()` of the last artifact, whose ancestors are the whole run;
- scaling: the same at 10× the iterations, as (t_large / t_small) / 10 (≤ 1 means linear or better).

Targets (issue): lineage < 200 ms and bookkeeping < 20 ms at 50 iterations; scaling ≤ linear.

    python bench/store.py [--small 50] [--large 500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, Field

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

class SyntheticConfig(BaseModel):
    iteration: int = Field(description="makes every stage key distinct")


def _stage_fn(ctx):
    from selfrefine.runtime.stage import Output, StageReturn

    outputs = {}
    for i in range(4):
        path = ctx.out_dir / f"out{i}.txt"
        path.write_text(f"{ctx.stage}:{ctx.config.iteration}:{i}")
        outputs[f"out{i}"] = Output(path, "dataset")
    return StageReturn(outputs, [("value", float(ctx.config.iteration), {})])


def measure(n_iterations: int, home: Path) -> dict[str, float]:
    os.environ["SELFREFINE_HOME"] = str(home)
    os.environ.pop("SELFREFINE_DB_URL", None)
    from selfrefine.runtime.registry import iteration_stages
    from selfrefine.runtime.runner import run_stage
    from selfrefine.runtime.stage import Stage
    from selfrefine.storage import repository as repo
    from selfrefine.storage.artifacts import ArtifactStore
    from selfrefine.storage.engine import Store
    from selfrefine.storage.lineage import lineage
    from selfrefine.storage.schema import Artifact

    # The loop's stages, as named in a run, without the policy evaluation that runs only with policy prompts.
    stages = iteration_stages()[:6]

    store, artifacts = Store(f"sqlite:///{home / 'store.db'}"), ArtifactStore(str(home / "artifacts"))
    with store.session() as s:
        run = repo.create_run(s, name="bench", n_iterations=n_iterations, config={}, config_digest="b")
    previous: dict[str, object] = {}
    times = []
    for index in range(1, n_iterations + 1):
        with store.session() as s:
            iteration = repo.get_or_create_iteration(s, run.id, index)
        for stage in stages:
            start = time.perf_counter()
            outcome = run_stage(Stage(stage, "1", SyntheticConfig, _stage_fn), SyntheticConfig(iteration=index),
                                previous, iteration_id=iteration.id, store=store, artifacts=artifacts)
            times.append(time.perf_counter() - start)
            previous = outcome.outputs
    last = next(iter(previous.values()))
    lineage_times = []
    for _ in range(5):
        start = time.perf_counter()
        with store.session() as s:
            graph = lineage(s, s.get_one(Artifact, last))
        lineage_times.append(time.perf_counter() - start)
    # Every artifact is an ancestor of the last one except its three siblings.
    expected = n_iterations * len(stages) * 4 - 3
    assert len(graph.artifacts) == expected, (len(graph.artifacts), expected)
    store.dispose()
    return {"bookkeeping_ms": statistics.median(times) * 1000,
            "bookkeeping_mean_ms": statistics.mean(times) * 1000,
            "lineage_ms": statistics.median(lineage_times) * 1000,
            "artifacts": expected}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--large", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = measure(args.small, Path(tmp) / "small")
        large = measure(args.large, Path(tmp) / "large")
    factor = args.large / args.small
    lineage_scaling = (large["lineage_ms"] / small["lineage_ms"]) / factor
    bookkeeping_scaling = (large["bookkeeping_ms"] / small["bookkeeping_ms"]) / factor
    for name, r in ((f"{args.small} iterations", small), (f"{args.large} iterations", large)):
        print(f"{name:>16}: {r['artifacts']:6d} artifacts  lineage of last artifact "
              f"{r['lineage_ms']:8.1f} ms  bookkeeping/stage run median {r['bookkeeping_ms']:6.2f} ms "
              f"(mean {r['bookkeeping_mean_ms']:.2f})")
    print(f"growth {args.small}→{args.large} divided by {factor:g}: lineage {lineage_scaling:.2f}, "
          f"bookkeeping {bookkeeping_scaling:.2f} (≤ 1 = linear or better)")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    scaling = max(lineage_scaling, bookkeeping_scaling)
    print(f"RESULT lineage_ms={small['lineage_ms']:.1f} bookkeeping_ms={small['bookkeeping_ms']:.2f} "
          f"scaling_ratio={scaling:.2f}")


if __name__ == "__main__":
    main()
