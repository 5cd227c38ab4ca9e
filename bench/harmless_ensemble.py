"""A lever for the harmless judge: the generative judge's reading and a reward head's, combined.

The two kinds read a conversation differently: the generative judge answers a Yes/No question about
one response (the packaged model's language-model head, SFT on that question), the reward head maps
the chat-template rendering to one number through a new linear head (Bradley–Terry). Where their
errors differ, a combination can be right more often than either.

Both give a calibrated P(chosen better) (bench/judges.py: ECE about 0.04), so they are combined
without any fitted weight as a product of experts: the two log-odds are added,
P = sigmoid(logit p_generative + logit p_reward). The rule is fixed before any reading; nothing is
chosen on the held-out pairs.

- generative: bench/judges.py's generative recipe (absolute Yes/No prompt, the pair's Yes and No
  examples in one batch, 4 pairs a step, last 8 blocks, lr 1e-4, one epoch) with the quality preset's
  token budget (448).
- reward head: bench/warm_heads.py's recipe (chat template, oldest turns cut to fit
  504 tokens, last 8 blocks, lr 5e-5, 4 pairs a step, one epoch, cosine), seed 0.

Both train on the same 800 hh-rlhf harmless pairs and are measured on the same 195 held-out pairs.

    python bench/harmless_ensemble.py [--keep DIR] [--only generative|reward_head] [--limit-train 16 --n-eval 8]

With --keep, each judge and its held-out verdicts are kept, and a judge already kept by the same
recipe is reused: `--only generative` and `--only reward_head` can run side by side, then a run
without --only combines them. Full runs write this script's section of bench/RESULTS.md; runs with
--only, --limit-train or --n-eval leave it alone.

Last line: RESULT ensemble_acc=… ensemble_acc_se=… ensemble_ece=… generative_acc=… reward_head_acc=… agreement=…
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import missing_data, publish, quiet_progress_bars, start_logging  # noqa: E402
from judge_training import DATA  # noqa: E402
from judges import add_data_arguments, load_data, summary, train_generative, train_reward, verdicts  # noqa: E402
from warm_heads import head_recipe  # noqa: E402

SECTION = "bench/harmless_ensemble.py"
KINDS = ("generative", "reward_head")
RECORD = "harmless_ensemble.json"  # in each kept judge's directory: what trained it, and its held-out verdicts


def recipes(model: str, seed: int) -> dict[str, dict]:
    return {
        "generative": dict(model=model, max_tokens=448, generative_parts="absolute", generative_lr=1e-4,
                           generative_eval="absolute", train_last_layers=8, seed=seed),
        "reward_head": head_recipe(model, seed=seed),
    }


def judged(kind: str, out: Path, train, held_out, recipe: dict) -> dict:
    """Train `kind` into `out` and read the held-out pairs, or reuse what a --keep run left there with the
    same recipe and pairs. Returns the record: steps, seconds, note and each pair's P(chosen better)."""
    record = out / RECORD
    key = {"recipe": recipe, "pairs": len(train), "held_out": len(held_out),
           "first": train[0].chosen[:80] if train else ""}
    if record.is_file() and (kept := json.loads(record.read_text())).get("key") == key:
        print(f"{kind}: reusing the judge and verdicts kept in {out}")
        return kept
    if out.exists():
        shutil.rmtree(out)
    args = argparse.Namespace(**recipe)
    result, note = (train_generative(train, out, args) if kind == "generative"
                    else train_reward("reward_head", train, out, args))
    read = verdicts(out, held_out, recipe["max_tokens"], by_absolute=kind == "generative")
    kept = {"key": key, "steps": result.steps, "seconds": result.seconds, "note": note,
            "p_chosen": [v.p_a for v in read]}
    record.write_text(json.dumps(kept))
    return kept


def as_verdicts(p_chosen: list[float]) -> list:
    """PairVerdicts (chosen as response A) from P(chosen better): one reading, so both orders agree."""
    from selfrefine.models.judge_types import PairVerdict

    return [PairVerdict(verdict="A" if p >= 0.5 else "B", p_a=p, p_a_forward=p, p_a_swapped=p, consistent=True)
            for p in p_chosen]


def product_of_experts(*readings: list[float]) -> list[float]:
    """Per pair, sigmoid of the sum of the readings' log-odds."""
    import math

    from selfrefine.models.judge_types import sigmoid

    def logit(p: float) -> float:
        p = min(max(p, 1e-12), 1 - 1e-12)
        return math.log(p / (1 - p))

    return [sigmoid(sum(logit(p) for p in ps)) for ps in zip(*readings)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--only", choices=KINDS, default=None, help="train and read one judge only (needs --keep to combine later)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default=None, help="keep both judges and their held-out verdicts in this directory")
    args = parser.parse_args()
    start_logging()
    if missing_data(DATA):
        return

    quiet_progress_bars()
    train, held_out, _ = load_data(args.n_train, args.limit_train, args.n_eval)
    print(f"data: {len(train)} training pairs, {len(held_out)} held-out pairs")
    kinds = [args.only] if args.only else list(KINDS)
    records = {}
    with tempfile.TemporaryDirectory(prefix="harmless-ensemble-") as scratch:
        root = Path(args.keep) if args.keep else Path(scratch)
        for kind, recipe in recipes(args.model, args.seed).items():
            if kind in kinds:
                records[kind] = judged(kind, root / kind, train, held_out, recipe)
                s = summary(as_verdicts(records[kind]["p_chosen"]))
                print(f"{kind}: accuracy {s['accuracy']:.3f} ± {s['accuracy_se']:.3f}, ECE {s['ece']:.3f}; "
                      f"{records[kind]['steps']} steps in {records[kind]['seconds']:.0f} s; {records[kind]['note']}")
    if args.only:
        return

    readings = {kind: records[kind]["p_chosen"] for kind in KINDS}
    readings["ensemble"] = product_of_experts(*(readings[kind] for kind in KINDS))
    rows = {name: summary(as_verdicts(ps)) for name, ps in readings.items()}
    right = {kind: [p >= 0.5 for p in readings[kind]] for kind in KINDS}
    agreement = sum(a == b for a, b in zip(*right.values())) / len(held_out)
    either = sum(a or b for a, b in zip(*right.values())) / len(held_out)
    labels = {"generative": "generative judge, absolute Yes/No log-odds",
              "reward_head": "reward head, chat template",
              "ensemble": "**both: log-odds added (product of experts)**"}
    lines = ["| judge | held-out accuracy | ECE | train s |", "|---|---|---|---|"]
    for name, s in rows.items():
        seconds = f"{records[name]['seconds']:.0f}" if name in records else "—"
        lines.append(f"| {labels[name]} | {s['accuracy']:.3f} ± {s['accuracy_se']:.3f} | {s['ece']:.3f} | {seconds} |")
    lines += ["", f"The two judges agree on {agreement:.3f} of the pairs; at least one is right on {either:.3f} "
              "(the most any way of choosing between them per pair could reach)."]
    smoke = args.limit_train is not None or args.n_eval is not None
    publish(SECTION, "The generative judge and a reward head combined, harmless (bench/harmless_ensemble.py)",
            f"; {len(train)} hh-rlhf harmless training pairs, {len(held_out)} held-out pairs (the dev split of "
            "bench/judges.py). Generative: " + records["generative"]["note"] + ". Reward head: "
            + records["reward_head"]["note"] + ". Combined by a rule fixed beforehand: the two P(chosen better) "
            "log-odds added.", lines, smoke=smoke)
    e = rows["ensemble"]
    print(f"RESULT ensemble_acc={e['accuracy']:.3f} ensemble_acc_se={e['accuracy_se']:.3f} ensemble_ece={e['ece']:.3f} "
          f"generative_acc={rows['generative']['accuracy']:.3f} reward_head_acc={rows['reward_head']['accuracy']:.3f} "
          f"agreement={agreement:.3f}")


if __name__ == "__main__":
    main()
