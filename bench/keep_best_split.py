"""Do keep_best's held-back pairs measure how well a judge judges new prompts, or what it memorised?

keep_best compares a new judge with the previous one on the tenth of the seed pairs with the lowest
content ids (`scoring.judge_gate.split_validation`). The helpful seed pairs come several to a prompt
(bench/quality.py: every AlpacaEval candidate preferred over the reference against every one that is
not, up to 10 per prompt), so those held-back pairs leave the other pairs of their prompts, and mostly
the same responses, in training. Holding back whole prompts instead would remove that overlap, but
leaves about 10 prompts to judge by instead of about 60. This trains one helpful reward head (the
`quality` preset's reward recipe: packaged model, last 8 blocks, lr 5e-5, one epoch, 8 pairs per
step) on the pairs that neither split holds back, and measures its pairwise accuracy on:

- by pair: keep_best's held-back pairs (their prompts and responses mostly in training);
- by prompt: a tenth held back as whole prompts (taken in the order of their lowest pair id);
- training pairs: as many pairs drawn from its own training data (what memory alone would give).

If the by-pair reading sat near the training one and above the by-prompt one, the gate would measure
memory. Scored at 768 tokens as the preset's keep_best does. Data is read in place from ../shared/data.

    python bench/keep_best_split.py [--pairs-per-prompt 10] [--bestofn 0]

About 35 minutes in float32 on two cores without native bfloat16. Full runs write this script's
section of bench/RESULTS.md; --smoke and --limit-train runs leave it alone.

Last line: RESULT by_pair_acc=… by_prompt_acc=… train_acc=… [bon=…]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dimension_mix import load_data  # noqa: E402
from judges import train_reward  # noqa: E402
from harness import command_line, missing_data, reading_label, start_logging  # noqa: E402
from quality import ALPACA, HH  # noqa: E402
from results_file import write_section  # noqa: E402

SECTION = "bench/keep_best_split.py"
FRACTION = 0.1


def prompt_key(pair) -> str:
    return json.dumps(pair.context, sort_keys=True)


def split_by_prompt(pairs, fraction: float):
    """At least `fraction` of the pairs, as whole prompts taken in the order of their lowest pair id."""
    n = max(1, round(fraction * len(pairs)))
    by_prompt: dict[str, list] = {}
    for pair in pairs:
        by_prompt.setdefault(prompt_key(pair), []).append(pair)
    held: set[str] = set()
    for group in sorted(by_prompt.values(), key=lambda group: min(p.id for p in group)):
        if len(held) >= n:
            break
        held.update(p.id for p in group)
    return [p for p in pairs if p.id in held]


def overlap(validation, train) -> str:
    prompts = {prompt_key(p) for p in train}
    responses = {r for p in train for r in (p.chosen, p.rejected)}
    seen_prompt = sum(prompt_key(p) in prompts for p in validation)
    both_seen = sum(p.chosen in responses and p.rejected in responses for p in validation)
    return (f"{len({prompt_key(p) for p in validation})} prompts; {seen_prompt} pairs with the prompt in training, "
            f"{both_seen} with both responses in training")


def accuracy(judge, pairs) -> float:
    from selfrefine.scoring.judge_eval import evaluate_judge

    return float(evaluate_judge(judge, list(pairs), [], pairwise_verdicts="absolute")["pairwise"]["accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs-per-prompt", type=int, default=10, help="helpful pairs per AlpacaEval prompt")
    parser.add_argument("--bestofn", type=int, default=0,
                        help="also the best-of-11 win rate on this many held-out prompts")
    parser.add_argument("--limit-train", type=int, default=None, help="train on the first N pairs only (smoke runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="leave bench/RESULTS.md alone (for trial runs)")
    args = parser.parse_args()
    # The preset's helpful reward recipe, in the fields bench/judges.py's `train_reward` reads.
    args.model, args.reward_batch_size, args.reward_lora_r, args.grm_alpha = "packaged", 8, 0, 0.0
    args.reward_lr, args.epochs, args.max_tokens, args.train_last_layers = 5e-5, 1.0, 504, 8
    start_logging()
    if missing_data(HH, ALPACA):
        return
    from selfrefine.models.judge_kind import load_judge
    from selfrefine.runtime.inputs import sample
    from selfrefine.scoring.judge_eval import evaluate_judge
    from selfrefine.scoring.judge_gate import split_validation

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="keep-best-split-") as scratch:
        sets, _, bestofn = load_data(Path(scratch), args.pairs_per_prompt, None, args.bestofn or None)
        helpful = sets["helpful"]
        by_pair = split_validation(helpful, FRACTION)[1]
        by_prompt = split_by_prompt(helpful, FRACTION)
        held = {p.id for p in by_pair + by_prompt}
        train = [p for p in helpful if p.id not in held][:args.limit_train]
        seen = sample(train, len(by_pair), args.seed)
        result, note = train_reward("reward_head", train, Path(scratch) / "helpful", args)
        judge = load_judge(str(Path(scratch) / "helpful"), max_length=768, batch_size=16)
        readings = {"by_pair": accuracy(judge, by_pair), "by_prompt": accuracy(judge, by_prompt),
                    "train": accuracy(judge, seen)}
        if args.bestofn:
            readings["bon"] = float(evaluate_judge(judge, [], bestofn)["bestofn"]["win_rate"])
    minutes = (time.perf_counter() - start) / 60
    lines = ["| measured on | pairs | accuracy | overlap with the training pairs |", "|---|---|---|---|",
             f"| held back by pair (keep_best, lowest ids) | {len(by_pair)} | {readings['by_pair']:.3f} "
             f"| {overlap(by_pair, train)} |",
             f"| held back by prompt | {len(by_prompt)} | {readings['by_prompt']:.3f} "
             f"| {overlap(by_prompt, train)} |",
             f"| training pairs (a sample) | {len(seen)} | {readings['train']:.3f} | all of them |"]
    print("\n".join(lines))
    trained = (f"one helpful reward head on {len(train)} of {len(helpful)} pairs ({result.num_examples} fit, "
               f"{result.steps} steps, {result.seconds / 60:.1f} min; {note})")
    print(trained)
    bon = f" bon={readings['bon']:.3f}" if args.bestofn else ""
    if not args.smoke and args.limit_train is None:
        command = command_line()
        bon_line = (f" Best-of-11 on {len(bestofn)} held-out prompts: {readings['bon']:.3f}." if args.bestofn else "")
        write_section(SECTION, ["## What keep_best's held-back pairs measure (bench/keep_best_split.py)", "",
                                f"`{command}` — seed {args.seed}, {reading_label()}, {minutes:.0f} min: {trained}.{bon_line}", "", *lines])
    print(f"RESULT by_pair_acc={readings['by_pair']:.3f} by_prompt_acc={readings['by_prompt']:.3f} "
          f"train_acc={readings['train']:.3f}{bon}")


if __name__ == "__main__":
    main()
