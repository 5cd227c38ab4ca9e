"""A lever for the harmless judge: WARM, the weight average of reward heads trained with different seeds.

Ramé et al. (2024) fine-tune one pretrained model several times, changing only the seed (data order,
head initialisation), and average the weights: the runs stay linearly connected, and the average
keeps what they all learnt while what each fitted to its own sample of the data's noise cancels.
`models.weight_average` does the averaging; here it is applied over --seeds runs, not over
iterations.

Each head is bench/judges.py's reward head with the recipe of the independent check named in the
judges issue, in the project's chat layout (`reward_recipe.input_format: chat_template`: the
definition as the system turn, the oldest turns cut to fit 504 tokens; bench/harmless_layout.py
measures the check's own rendering), the last 8 blocks trained, lr 5e-5, 4 pairs a step, one epoch,
cosine, on the same 800 hh-rlhf
harmless pairs. Every seed's head and their uniform average are measured on the same 195 held-out
pairs, so the table shows the seed spread (how much of a gap to a target one seed's reading can
explain) and what averaging adds. No seed is chosen: the average takes all of them.

    python bench/warm_heads.py [--seeds 0,1,2] [--keep DIR] [--limit-train 16 --n-eval 8]

With --keep, a head already trained there by the same recipe is reused, so a stopped run resumes
and more seeds can be added to an average later.

Each head trains for about 25 minutes in float32 on two AVX2 cores. Full runs write this script's
section of bench/RESULTS.md; runs with --limit-train or --n-eval are smoke runs and leave it alone.

Last line: RESULT warm_acc=… warm_ece=… ensemble_acc=… seed_acc_mean=… seed_acc_sd=… seeds=…
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import missing_data, publish, quiet_progress_bars, start_logging  # noqa: E402
from judge_training import DATA  # noqa: E402
from judges import add_data_arguments, evaluate, load_data, summary, train_reward, verdicts  # noqa: E402

SECTION = "bench/warm_heads.py"
TRAINED_RECORD = "warm_heads.json"  # in each kept head's directory: what trained it


def head_recipe(model: str, **changes) -> dict:
    """bench/judges.py's reward-head options set to the independent check's recipe (see the module
    docstring), with `changes` on top: the harmless benches that vary one part of it start here."""
    return dict(model=model, max_tokens=504, reward_input_format="chat_template", train_last_layers=8,
                reward_lr=5e-5, epochs=1.0, reward_batch_size=4, reward_lora_r=0, grm_alpha=0.0) | changes


def uniform_average(dirs: list[Path], scratch: Path) -> Path:
    """The uniform weight average of `dirs`, built as a running mean: after the i-th checkpoint the
    average holds weight 1/i of it, so every checkpoint ends with weight 1/len(dirs)."""
    from selfrefine.models.weight_average import average_checkpoints

    average = dirs[0]
    for i, directory in enumerate(dirs[1:], start=2):
        out = scratch / f"average-of-{i}"
        if out.exists():  # an earlier --keep run's average, perhaps of other heads
            shutil.rmtree(out)
        average = average_checkpoints(average, directory, out, newer_weight=1.0 / i)
    return average


def ensemble_verdicts(seed_verdicts: list[list]) -> list[dict]:
    """Prediction ensembling, WARM's baseline: per pair, the mean over heads of the reward difference
    r_chosen − r_rejected = logit(p_a), read back through the sigmoid."""
    import numpy as np

    from selfrefine.models.judge_types import sigmoid

    def mean_logit(ps) -> float:
        ps = np.clip(np.asarray(ps, dtype=float), 1e-12, 1 - 1e-12)
        return sigmoid(float(np.mean(np.log(ps / (1 - ps)))))

    out = []
    for per_head in zip(*seed_verdicts):
        forward = mean_logit([v.p_a_forward for v in per_head])
        swapped = mean_logit([v.p_a_swapped for v in per_head])
        out.append({"p_a": mean_logit([v.p_a for v in per_head]), "p_a_forward": forward,
                    "p_a_swapped": swapped, "consistent": (forward > 0.5) == (swapped > 0.5)})
    return out


def trained_head(out: Path, train, recipe: dict, seed: int) -> dict:
    """Train seed `seed`'s head into `out`, or reuse the one a --keep run left there with the same
    recipe and training pairs (each head takes tens of minutes on a CPU; a stopped run resumes)."""
    record = out / TRAINED_RECORD
    key = {"recipe": recipe, "seed": seed, "pairs": len(train), "first": train[0].chosen[:80] if train else ""}
    if record.is_file() and (kept := json.loads(record.read_text())).get("key") == key:
        print(f"seed {seed}: reusing the head kept in {out}")
        return kept
    if out.exists():
        shutil.rmtree(out)
    result, note = train_reward("reward_head", train, out, argparse.Namespace(**recipe, seed=seed))
    trained = {"key": key, "steps": result.steps, "seconds": result.seconds, "note": note}
    record.write_text(json.dumps(trained))
    return trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds; every one is averaged")
    add_data_arguments(parser)
    parser.add_argument("--keep", default=None, help="keep every head and the average in this directory")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if len(seeds) < 2:
        parser.error("--seeds: an average needs at least two seeds")
    start_logging()
    if missing_data(DATA):
        return

    quiet_progress_bars()

    # bench/judges.py's reward-head recipe, set to the independent check's settings.
    recipe = head_recipe(args.model)
    train, held_out, _ = load_data(args.n_train, args.limit_train, args.n_eval)
    print(f"data: {len(train)} training pairs, {len(held_out)} held-out pairs; seeds {seeds}")
    rows: list[tuple[str, dict]] = []
    train_seconds = []
    with tempfile.TemporaryDirectory(prefix="warm-") as scratch:
        root = Path(args.keep) if args.keep else Path(scratch)
        dirs, seed_verdicts = [], []
        for seed in seeds:
            out = root / f"seed-{seed}"
            trained = trained_head(out, train, recipe, seed)
            dirs.append(out)
            train_seconds.append(trained["seconds"])
            seed_verdicts.append(verdicts(out, held_out, recipe["max_tokens"]))
            rows.append((f"seed {seed}", summary(seed_verdicts[-1])))
            print(f"seed {seed}: accuracy {rows[-1][1]['accuracy']:.3f}, ECE {rows[-1][1]['ece']:.3f}; "
                  f"{trained['steps']} steps in {trained['seconds']:.0f} s; {trained['note']}")
        average = uniform_average(dirs, root)
        warm = evaluate(average, held_out, recipe["max_tokens"])
        print(f"WARM average of {len(seeds)}: accuracy {warm['accuracy']:.3f}, ECE {warm['ece']:.3f}")
    ensemble = summary(ensemble_verdicts(seed_verdicts))
    print(f"ensemble of {len(seeds)} (mean reward difference): accuracy {ensemble['accuracy']:.3f}, "
          f"ECE {ensemble['ece']:.3f}")

    accuracies = [r["accuracy"] for _, r in rows]
    mean, sd = statistics.mean(accuracies), statistics.stdev(accuracies)
    lines = ["| head | held-out accuracy | ECE | order consistency |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['accuracy']:.3f} | {r['ece']:.3f} | {r['consistency']:.2f} |" for name, r in rows]
    lines += [f"| seeds' mean ± sd | {mean:.3f} ± {sd:.3f} | | |",
              f"| **WARM: uniform average of the {len(seeds)} heads' weights** | **{warm['accuracy']:.3f}** ± {warm['accuracy_se']:.3f} "
              f"| {warm['ece']:.3f} | {warm['consistency']:.2f} |",
              f"| ensemble: the {len(seeds)} heads' reward differences averaged (costs {len(seeds)} scorings) "
              f"| {ensemble['accuracy']:.3f} | {ensemble['ece']:.3f} | {ensemble['consistency']:.2f} |"]
    publish(SECTION, "WARM over seeds, harmless reward head (bench/warm_heads.py)",
            f"; {len(train)} hh-rlhf harmless training pairs, {len(held_out)} held-out pairs (the dev split of bench/judges.py). "
            "Each head: chat-template layout, oldest turns cut to fit 504 tokens, last 8 blocks, lr 5e-5, 4 pairs a step, "
            f"one epoch, cosine; {statistics.mean(train_seconds):.0f} s of training a head. "
            "The ± of the average is its standard error over the held-out pairs.",
            lines, smoke=args.limit_train is not None or args.n_eval is not None)
    print(f"RESULT warm_acc={warm['accuracy']:.3f} warm_ece={warm['ece']:.3f} ensemble_acc={ensemble['accuracy']:.3f} "
          f"seed_acc_mean={mean:.3f} "
          f"seed_acc_sd={sd:.3f} seeds={len(seeds)}")


if __name__ == "__main__":
    main()
