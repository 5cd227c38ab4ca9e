"""How hard the dev split's held-out harmless pairs are: the same reward head measured on other folds.

The judges issue's harmless target (0.68) is read on one fixed set: the 195 pairs that follow the 800
training pairs in ../shared/data/hh-rlhf-harmless-dev.jsonl.gz. An independent check reported 0.70 on
another test set. With one standard error near 0.034, a fixed set can sit well above or below what a
recipe reads on average; this bench measures by how much, without touching the recipe.

The valid pairs are cut into folds of 195 from the end: fold 0 is the dev split's held-out set, fold 1
the 195 pairs before it, and so on. For each fold asked for, bench/warm_heads.py's reward head (chat
template, oldest turns cut to fit 504 tokens, last 8 blocks, lr 5e-5, 4 pairs a step, one epoch,
cosine, seed 0) trains on the other pairs, the first 800 of them in file order, and is measured once on
the fold. Nothing is chosen: every fold's reading is reported.

    python bench/harmless_folds.py [--folds 0,1,2] [--keep DIR] [--limit-train 16 --n-eval 8]

With --keep, a head already trained there by the same recipe and pairs is reused with its reading,
so folds can run in separate processes (`--folds 1`, `--folds 2`) before one run tabulates them. A
fold takes about 10 minutes on two cores with native bfloat16. Full runs write this script's section
of bench/RESULTS.md; --limit-train or --n-eval runs are smoke runs and leave it alone.

Last line: RESULT fold_acc_<i>=… mean_acc=… sd_acc=… folds=…
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harmless_depth import validated  # noqa: E402
from harness import missing_data, publish, quiet_progress_bars, start_logging  # noqa: E402
from judge_training import DATA  # noqa: E402
from judges import add_data_arguments, load_data  # noqa: E402
from warm_heads import head_recipe, trained_head  # noqa: E402

SECTION = "bench/harmless_folds.py"
FOLD = 195  # the dev split's held-out size


def folds_of(pairs: list, fold: int, size: int, n_train: int) -> tuple[list, list]:
    """(training pairs, fold pairs): fold `fold` is the `size` pairs ending `fold * size` from the end;
    the first `n_train` of the others, in file order, train."""
    end = len(pairs) - fold * size
    if end - size < 0:
        raise SystemExit(f"--folds: fold {fold} needs {(fold + 1) * size} pairs; the file has {len(pairs)}")
    held = pairs[end - size:end]
    return (pairs[:end - size] + pairs[end:])[:n_train], held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", default="0,1,2", help="comma-separated folds (0 = the dev split's held-out pairs)")
    add_data_arguments(parser)
    parser.add_argument("--keep", default=None, help="keep every head in this directory (and reuse them)")
    args = parser.parse_args()
    folds = sorted({int(f) for f in args.folds.split(",") if f.strip()})
    start_logging()
    if missing_data(DATA):
        return

    quiet_progress_bars()
    train, held_out, _ = load_data(args.n_train, None, None)
    pairs = train + held_out  # every valid pair, in file order
    smoke = args.limit_train is not None or args.n_eval is not None
    size = min(FOLD, args.n_eval) if args.n_eval else FOLD
    recipe = head_recipe(args.model)
    readings: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="folds-") as scratch:
        root = Path(args.keep) if args.keep else Path(scratch)
        for fold in folds:
            fit, held = folds_of(pairs, fold, size, args.limit_train or args.n_train)
            trained = trained_head(root / f"fold-{fold}", fit, recipe, seed=0)
            r = readings[fold] = {**validated(root / f"fold-{fold}", held, recipe["max_tokens"]), "pairs": len(held),
                                  "train_pairs": len(fit)}
            print(f"fold {fold}: accuracy {r['accuracy']:.3f} ± {r['accuracy_se']:.3f}, ECE {r['ece']:.3f}; trained on "
                  f"{len(fit)} pairs, {trained['steps']} steps in {trained['seconds']:.0f} s")
    accuracies = [r["accuracy"] for r in readings.values()]
    lines = ["| fold | pairs | held-out accuracy | ECE |", "|---|---|---|---|"]
    for fold, r in readings.items():
        label = f"{fold}{': the dev split, as in every other harmless table' if fold == 0 else ''}"
        lines.append(f"| {label} | {r['pairs']} | {r['accuracy']:.3f} ± {r['accuracy_se']:.3f} | {r['ece']:.3f} |")
    sd = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    lines += ["", f"Mean over the {len(accuracies)} folds: **{statistics.mean(accuracies):.3f}** (sd {sd:.3f})."]
    publish(SECTION, "The harmless reward head on other folds of the dev data (bench/harmless_folds.py)",
            f". bench/warm_heads.py's recipe (seed 0), trained on {args.limit_train or args.n_train} pairs and measured "
            f"on the {size} pairs of each fold, counted back from the end of the file.", lines, smoke=smoke)
    per_fold = " ".join(f"fold_acc_{fold}={r['accuracy']:.3f}" for fold, r in readings.items())
    print(f"RESULT {per_fold} mean_acc={statistics.mean(accuracies):.3f} sd_acc={sd:.3f} folds={len(accuracies)}")


if __name__ == "__main__":
    main()
