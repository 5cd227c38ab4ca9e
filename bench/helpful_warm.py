"""A lever for the helpful judge: WARM, the weight average of reward heads trained with different seeds.

Ramé et al. (2024) report WARM's gain where it matters here: best-of-n picked by a weight-averaged
reward model beats best-of-n picked by any one of its members, because what each run fitted to its
own sample of label noise cancels in the average. bench/warm_heads.py measured the average on the
harmless head (pairwise accuracy); this measures it on the helpful head, by best-of-11.

Each head is the `quality` preset's helpful reward head as bench/dimension_mix.py trains it (plain
layout, 504 tokens, last 8 blocks, lr 5e-5, one epoch, 8 pairs a step, cosine) on the same AlpacaEval
pairs of the 200 seed prompts, changing only the seed. Every seed's head, their uniform weight
average and the prediction ensemble (the heads' rewards averaged per candidate, three scorings) pick
best-of-11 on the 203 held-out prompts, scored at 768 tokens as the preset's evaluate stage scores,
next to random, the longest-response rule and the oracle. No seed is chosen: the average and the
ensemble take all of them, a rule fixed before any head was measured.

    python bench/helpful_warm.py [--seeds 0,1,2] [--keep DIR] [--only-seed N | --only-average]
                                 [--limit-train 16 --n-eval 8]

With --keep, each head and its best-of-11 scores are kept and reused, so the seeds can train in
separate processes (`--only-seed N --keep DIR`, one thread each), the average can be scored beside
the seeds' scorings once their training is done (`--only-average --keep DIR`), and a last run with
neither builds the table from what they kept.

Each head trains 123 steps (about 20 minutes at one thread on an AMD Zen 5 with one other job
beside it) and holds about 8 GB while it trains: three fit in 24 GB with nothing else running.
Full runs write this script's section of bench/RESULTS.md; runs
with --limit-train or --n-eval are smoke runs and leave it alone.

Last line: RESULT warm_bon=… warm_bon_se=… warm_margin=… warm_margin_se=… ensemble_bon=… ensemble_margin=…
seed_bon_mean=… seed_bon_sd=… longest_bon=… length_spearman=… seeds=…
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dimension_mix import load_data  # noqa: E402
from harness import missing_data, publish, quiet_progress_bars, start_logging  # noqa: E402
from quality import ALPACA, HH  # noqa: E402
from warm_heads import head_recipe, trained_head, uniform_average  # noqa: E402

SECTION = "bench/helpful_warm.py"
PAIRS_PER_PROMPT = 10  # bench/quality.py's and bench/dimension_mix.py's default
PAIRS_PER_STEP = 8  # bench/dimension_mix.py's batch
SCORE_TOKENS = 768  # the quality preset's evaluate stage reads candidates at this length
SCORES_FILE = "bestofn_scores.json"  # in each seed's head directory: its reward for every candidate
AVERAGE_SCORES = "average-bestofn_scores.json"  # in --keep: the average's (its directory is rebuilt each run)


def kept_scores(path: Path, bestofn, source, cache: Path) -> list[list[float]]:
    """The reward of the head in `path` for every candidate of every item, read from `cache` when an
    earlier run scored the same items with a head from the same `source` (the training records it
    came from): a scoring takes minutes per head."""
    from selfrefine.models.judge_kind import load_judge
    from selfrefine.scoring.judge_eval import candidate_scores

    key = {"items": [item.id for item in bestofn], "source": source}
    if cache.is_file() and (kept := json.loads(cache.read_text())).get("key") == key:
        return kept["scores"]
    start = time.perf_counter()
    scores = candidate_scores(load_judge(str(path), max_length=SCORE_TOKENS, batch_size=16), bestofn)
    cache.write_text(json.dumps({"key": key, "scores": scores, "seconds": time.perf_counter() - start}))
    return scores


def ensemble_scores(per_head: list[list[list[float]]]) -> list[list[float]]:
    """Prediction ensembling, WARM's baseline: each candidate's reward averaged over the heads. The
    heads share one recipe and start, so their rewards are on one scale and need no standardising."""
    import numpy as np

    return [np.mean(np.asarray(item_scores, dtype=float), axis=0).tolist() for item_scores in zip(*per_head)]


def row(name: str, m: dict) -> str:
    return (f"| {name} | {m['win_rate']:.3f} ± {m['win_rate_se']:.3f} | "
            f"{m['margin_over_longest']:+.3f} ± {m['margin_over_longest_se']:.3f} | {m['length_spearman']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds; every one is averaged")
    parser.add_argument("--only-seed", type=int, default=None,
                        help="train and score this seed's head into --keep, then stop (seeds side by side)")
    parser.add_argument("--only-average", action="store_true",
                        help="build and score the average of the --seeds heads kept in --keep, then stop")
    parser.add_argument("--keep", default=None, help="keep every head, its scores and the average in this directory")
    parser.add_argument("--limit-train", type=int, default=None, help="first N helpful pairs (smoke runs)")
    parser.add_argument("--n-eval", type=int, default=None, help="first N best-of-11 items (smoke runs)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.only_seed is None and len(seeds) < 2:
        parser.error("--seeds: an average needs at least two seeds")
    if args.only_seed is not None and not args.keep:
        parser.error("--only-seed: give --keep DIR, where the last run without --only-seed finds the head")
    if args.only_average and (args.only_seed is not None or not args.keep):
        parser.error("--only-average: give --keep DIR holding the --seeds heads, and no --only-seed")
    start_logging()
    if missing_data(HH, ALPACA):
        return
    quiet_progress_bars()
    from selfrefine.scoring.metrics import best_of_n_metrics

    # bench/dimension_mix.py's helpful head: the harmless check's recipe in the plain layout, 8 pairs a step.
    recipe = head_recipe("packaged", reward_input_format="plain", reward_batch_size=PAIRS_PER_STEP)
    with tempfile.TemporaryDirectory(prefix="helpful-warm-") as scratch:
        sets, _, bestofn = load_data(Path(scratch), PAIRS_PER_PROMPT, args.limit_train, args.n_eval)
        train = sets["helpful"]
        print(f"data: {len(train)} helpful training pairs, {len(bestofn)} best-of-11 items")
        root = Path(args.keep) if args.keep else Path(scratch)
        runs = [args.only_seed] if args.only_seed is not None else seeds
        trained = {seed: trained_head(root / f"seed-{seed}", train, recipe, seed) for seed in runs}
        if args.only_seed is None:
            average = uniform_average([root / f"seed-{seed}" for seed in seeds], root)
            average_scores = kept_scores(average, bestofn, list(trained.values()), root / AVERAGE_SCORES)
            warm = best_of_n_metrics(bestofn, average_scores)
            print(f"WARM average of {len(seeds)}: best-of-11 {warm['win_rate']:.3f}, margin over longest "
                  f"{warm['margin_over_longest']:+.3f}")
            if args.only_average:
                return
        rows, per_head = [], []
        for seed in runs:
            out = root / f"seed-{seed}"
            per_head.append(kept_scores(out, bestofn, trained[seed], out / SCORES_FILE))
            metrics = best_of_n_metrics(bestofn, per_head[-1])
            rows.append((f"seed {seed}", metrics))
            print(f"seed {seed}: best-of-11 {metrics['win_rate']:.3f}, margin over longest "
                  f"{metrics['margin_over_longest']:+.3f}; {trained[seed]['steps']} steps in "
                  f"{trained[seed]['seconds']:.0f} s; {trained[seed]['note']}")
        if args.only_seed is not None:
            return
    ensemble = best_of_n_metrics(bestofn, ensemble_scores(per_head))

    seed_bons = [m["win_rate"] for _, m in rows]
    mean, sd = statistics.mean(seed_bons), statistics.stdev(seed_bons)
    first = rows[0][1]
    lines = ["| picker | best-of-11 win rate | margin over the longest rule (paired) | length Spearman |",
             "|---|---|---|---|"]
    lines += [row(name, m) for name, m in rows]
    lines += [f"| seeds' mean ± sd | {mean:.3f} ± {sd:.3f} | | |",
              row(f"**WARM: uniform average of the {len(seeds)} heads' weights**", warm),
              row(f"ensemble: the {len(seeds)} heads' rewards averaged (costs {len(seeds)} scorings)", ensemble),
              f"| longest candidate | {first['longest_win_rate']:.3f} | | 1.000 |",
              f"| random | {first['random_win_rate']:.3f} | | |",
              f"| oracle | {first['oracle_win_rate']:.3f} | | |"]
    publish(SECTION, "WARM over seeds, helpful reward head (bench/helpful_warm.py)",
            f"; {len(train)} AlpacaEval helpful training pairs from the 200 seed prompts, best-of-11 on the "
            f"{len(bestofn)} held-out prompts. Each head: plain layout, 504 tokens, last 8 blocks, lr 5e-5, "
            f"8 pairs a step, one epoch, cosine; {statistics.mean(t['seconds'] for t in trained.values()):.0f} s of training a head "
            "(as the kept heads' records give it). ± is a standard error over prompts.",
            lines, smoke=args.limit_train is not None or args.n_eval is not None)
    print(f"RESULT warm_bon={warm['win_rate']:.3f} warm_bon_se={warm['win_rate_se']:.3f} "
          f"warm_margin={warm['margin_over_longest']:.3f} warm_margin_se={warm['margin_over_longest_se']:.3f} "
          f"ensemble_bon={ensemble['win_rate']:.3f} ensemble_margin={ensemble['margin_over_longest']:.3f} "
          f"seed_bon_mean={mean:.3f} seed_bon_sd={sd:.3f} longest_bon={first['longest_win_rate']:.3f} "
          f"length_spearman={warm['length_spearman']:.3f} seeds={len(seeds)}")


if __name__ == "__main__":
    main()
