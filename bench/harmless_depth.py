"""Levers for the harmless judge: how many of the packaged model's 30 blocks the reward head trains,
and for how many epochs, chosen on a validation split of the training pairs and then measured once on
the held-out pairs.

The harmless reward head of bench/warm_heads.py (the independent check's recipe: the whole
conversation in the chat template, the oldest turns cut to fit 504 tokens, lr 5e-5, 4 pairs a step, one epoch,
cosine) trains only the last 8 blocks, to shorten a CPU step. Training more of the backbone is the
issue's "more trainable blocks" lever; a second epoch (--epochs 1,2; the cosine schedule spans every
epoch) is the other way to train it more. Choosing by the held-out pairs would make their figure
optimistic, so:

1. every variant (each depth in --blocks for each count in --epochs) trains on the first 640 of the
   800 training pairs and is scored on the other 160 (the validation split; the file's order is
   already a seeded random one);
2. the variant with the best validation accuracy is chosen (a tie goes to fewer blocks, then fewer
   epochs: the cheaper training);
3. that variant trains again on all 800 pairs and is measured once on the 195 held-out pairs.

    python bench/harmless_depth.py [--blocks 8,16] [--epochs 1] [--keep DIR] [--limit-train 16 --n-eval 8]

With --keep, a head already trained there by the same recipe, depth, epochs and pairs is reused
(bench/warm_heads.py's record), with its validation reading, so a stopped run resumes and variants can
be trained by separate processes (--validation-only) before one run chooses among them. On two AVX2 cores in float32 the 8-block head takes about 20 minutes on 640 pairs and a
deeper one longer; every block (--blocks 30, a full fine-tune) makes a step about three times the
8-block one's, past the judges issue's bound of 1.5× the training time, so it is not a default. Full runs write this script's section of bench/RESULTS.md; --limit-train or --n-eval runs are
smoke runs and leave it alone.

Last line: RESULT chosen_blocks=… chosen_epochs=… harmless_acc=… harmless_ece=… val_acc_<V>=… train_s_<V>=…
(V: the depth, with `x<epochs>` beside it when that is not one)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import missing_data, publish, quiet_progress_bars, start_logging  # noqa: E402
from judge_training import DATA  # noqa: E402
from judges import add_data_arguments, evaluate, load_data  # noqa: E402
from warm_heads import TRAINED_RECORD, head_recipe, trained_head  # noqa: E402

SECTION = "bench/harmless_depth.py"
N_BLOCKS = 30  # the packaged model's depth; training all of them is a full fine-tune
VALIDATION = 160  # the last pairs of the training split, held back to choose the depth
VALIDATED = "validation.json"  # in each kept head's directory: its reading on the validation pairs


def depth_recipe(model: str, blocks: int, epochs: float = 1.0) -> dict:
    """bench/warm_heads.py's recipe with the last `blocks` blocks trained (all of them: no freezing)
    for `epochs` passes over the pairs (the cosine schedule spans them all)."""
    return head_recipe(model, train_last_layers=None if blocks >= N_BLOCKS else blocks, epochs=float(epochs))


def variant_name(blocks: int, epochs: float) -> str:
    """A variant's directory name and table label: one epoch keeps the plain depth (`fit-8`)."""
    return f"{blocks}" if epochs == 1 else f"{blocks}x{epochs:g}"


def validated(head: Path, pairs, max_tokens: int) -> dict:
    """`head`'s reading on the validation `pairs`, kept beside it (VALIDATED) so that a later run,
    such as the one that goes on to the held-out pairs after separate processes trained the depths,
    does not score them again. A reading is reused only for the same pairs and the same head."""
    record = head / VALIDATED
    key = {"pairs": len(pairs), "first": pairs[0].chosen[:80] if pairs else "",
           "head": (head / TRAINED_RECORD).read_text()}
    if record.is_file() and (kept := json.loads(record.read_text())).get("key") == key:
        return kept["reading"]
    reading = evaluate(head, pairs, max_tokens)
    record.write_text(json.dumps({"key": key, "reading": reading}))
    return reading


def split_data(args: argparse.Namespace) -> tuple[list, list, list, list]:
    """(training pairs, the pairs that fit a variant, the pairs that validate it, held-out pairs): the
    last VALIDATION training pairs validate (a fifth, at least 2, in smoke runs); the file's order is
    already a seeded random one."""
    train, held_out, _ = load_data(args.n_train, args.limit_train, args.n_eval)
    n = max(2, len(train) // 5) if args.limit_train is not None else VALIDATION
    fit, validation_pairs = train[:-n], train[-n:]
    print(f"data: {len(fit)} pairs fit and {len(validation_pairs)} validate each variant; the chosen one trains on "
          f"all {len(train)} and is measured on {len(held_out)} held-out pairs")
    return train, fit, validation_pairs, held_out


def choose(validation: dict[tuple[int, float], dict]) -> tuple[int, float]:
    """The (blocks, epochs) variant with the best validation accuracy; among equals, the cheapest: the
    fewest blocks, then the fewest epochs."""
    return min(validation, key=lambda variant: (-round(validation[variant]["accuracy"], 6), *variant))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", default="8,16", help="comma-separated depths to choose from (30 = every block)")
    parser.add_argument("--epochs", default="1", help="comma-separated epoch counts to choose from, for every depth")
    add_data_arguments(parser)
    parser.add_argument("--keep", default=None, help="keep every head in this directory (and reuse them)")
    parser.add_argument("--validation-only", action="store_true",
                        help="train and validate the depths, then stop (to train depths in separate processes)")
    args = parser.parse_args()
    depths = sorted({int(b) for b in args.blocks.split(",") if b.strip()})
    if not depths or min(depths) < 1 or max(depths) > N_BLOCKS:
        parser.error(f"--blocks: depths between 1 and {N_BLOCKS}")
    epoch_counts = sorted({float(e) for e in args.epochs.split(",") if e.strip()})
    if not epoch_counts or min(epoch_counts) <= 0:
        parser.error("--epochs: positive epoch counts")
    start_logging()
    if missing_data(DATA):
        return

    quiet_progress_bars()

    train, fit, validation_pairs, held_out = split_data(args)
    validation: dict[tuple[int, float], dict] = {}
    with tempfile.TemporaryDirectory(prefix="depth-") as scratch:
        root = Path(args.keep) if args.keep else Path(scratch)
        for blocks in depths:
            for epochs in epoch_counts:
                recipe, name = depth_recipe(args.model, blocks, epochs), variant_name(blocks, epochs)
                trained = trained_head(root / f"fit-{name}", fit, recipe, seed=0)
                v = validation[blocks, epochs] = {
                    **validated(root / f"fit-{name}", validation_pairs, recipe["max_tokens"]),
                    "seconds": trained["seconds"], "steps": trained["steps"]}
                print(f"{blocks} blocks, {epochs:g} epoch(s): validation accuracy {v['accuracy']:.3f} ± "
                      f"{v['accuracy_se']:.3f}, ECE {v['ece']:.3f}; {v['steps']} steps in {v['seconds']:.0f} s")
        if args.validation_only:
            return
        blocks, epochs = chosen = choose(validation)
        recipe = depth_recipe(args.model, blocks, epochs)
        head = root / f"all-{variant_name(blocks, epochs)}"
        final = trained_head(head, train, recipe, seed=0)
        held = evaluate(head, held_out, recipe["max_tokens"])
    print(f"chosen: {blocks} blocks, {epochs:g} epoch(s); held-out accuracy {held['accuracy']:.3f} ± "
          f"{held['accuracy_se']:.3f}, ECE {held['ece']:.3f}; {final['steps']} steps in {final['seconds']:.0f} s")

    lines = [f"| blocks trained | epochs | validation accuracy ({len(validation_pairs)} pairs) | validation ECE "
             f"| train s ({len(fit)} pairs) | s / step |",
             "|---|---|---|---|---|---|"]
    for (b, e), v in validation.items():
        mark = " (chosen)" if (b, e) == chosen else ""
        lines.append(f"| {b}{mark} | {e:g} | {v['accuracy']:.3f} ± {v['accuracy_se']:.3f} | {v['ece']:.3f} | "
                     f"{v['seconds']:.0f} | {v['seconds'] / max(v['steps'], 1):.1f} |")
    lines += ["", f"The chosen variant, {blocks} blocks for {epochs:g} epoch(s), trained on all {len(train)} pairs "
                  f"({final['seconds']:.0f} s) and measured once on the {len(held_out)} held-out pairs: "
                  f"**{held['accuracy']:.3f}** ± {held['accuracy_se']:.3f}, ECE {held['ece']:.3f}."]
    publish(SECTION, "How many blocks and epochs the harmless reward head trains (bench/harmless_depth.py)",
            ". bench/warm_heads.py's recipe (chat template, oldest turns cut to fit 504 tokens, lr 5e-5, 4 pairs a step, "
            f"cosine over all epochs, seed 0), the variant chosen on the last {len(validation_pairs)} of the "
            f"{len(train)} training pairs; only the chosen one is measured on the held-out pairs.",
            lines, smoke=args.limit_train is not None or args.n_eval is not None)
    figures = " ".join(f"val_acc_{variant_name(b, e)}={v['accuracy']:.3f} train_s_{variant_name(b, e)}={v['seconds']:.0f}"
                       for (b, e), v in validation.items())
    print(f"RESULT chosen_blocks={blocks} chosen_epochs={epochs:g} harmless_acc={held['accuracy']:.3f} "
          f"harmless_ece={held['ece']:.3f} {figures}")


if __name__ == "__main__":
    main()
