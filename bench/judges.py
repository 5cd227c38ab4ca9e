"""Judge kinds side by side on hh-rlhf harmless: pairwise accuracy and ECE of the generative judge, a
Bradley–Terry reward head, reward head + GRM (SFT regulariser) and reward head + MORE.

Data: ../shared/data/hh-rlhf-harmless-dev.jsonl.gz through the project's loader with invalid
records skipped: the first 800 valid pairs train, the remaining valid pairs are held out. MORE needs
preference sources; the training pairs are split into two pseudo-sources by conversation length
(characters of the context turns) at the training set's median: `short` and `long`.

Judges, all from the packaged model:
- generative: bench/judge_training.py's recipe on the absolute Yes/No prompt (" Yes" for the chosen
  response, " No" for the rejected one, both in one batch), SFT with the loss on the answer token,
  the same blocks trained as the reward heads (--train-last-layers), lr --generative-lr, cosine;
  through judge_training's `build_examples` and `recipe_config`. --generative-parts adds the
  pairwise prompt (both orders) to the training examples.
- reward_head / +GRM / +MORE: `train_reward_head` (TRL RewardTrainer), linear head.
Every judge is evaluated through `scoring.metrics.pairwise_metrics` (accuracy, ECE of P(chosen
better)) on the held-out pairs. Reward heads: `compare`, P = sigmoid(r_chosen - r_rejected). The
generative judge: `judge_modes.verdicts_from_absolute` by default, P = sigmoid of the difference of the
two responses' Yes log-odds, the same Bradley–Terry reading; --generative-eval pairwise asks the
pairwise prompt in both orders instead.

The results table is written into bench/RESULTS.md (this script's section only) on full runs;
runs with --limit-train or --n-eval are smoke runs and leave the file alone.

    python bench/judges.py [--epochs 1] [--reward-lr 3e-5] [--limit-train 16 --n-eval 8]
    python bench/judges.py --kinds reward_head,grm      # a subset; the other kinds' rows are kept

With --train-last-layers 8 the four kinds take about 40 minutes on two cores with native bf16
(AVX512-BF16/AMX) and about 2.5 hours in float32. A subset run replaces only its own kinds' rows in
the table, so a slow machine can measure them in parts; each row names the settings it was measured with.

Last line: RESULT generative_acc=… reward_head_acc=… grm_acc=… more_acc=… generative_ece=… reward_head_ece=… grm_ece=… more_ece=…
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
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/judge_training.py

from judge_training import DATA, DIMENSION, build_examples, recipe_config  # noqa: E402
from harness import command_line, missing_data, quiet_progress_bars, reading_label, start_logging  # noqa: E402
from results_file import read_section, write_section  # noqa: E402

SECTION = "bench/judges.py"  # its section of bench/RESULTS.md
KINDS = ("generative", "reward_head", "grm", "more")
LABELS = {"generative": "generative", "reward_head": "reward_head", "grm": "reward_head + GRM (sft)",
          "more": "reward_head + MORE"}


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and data options every harmless-judge bench shares (see `load_data`)."""
    parser.add_argument("--model", default="packaged", help="base model alias or directory")
    parser.add_argument("--n-train", type=int, default=800, help="valid records that train (the rest are held out)")
    parser.add_argument("--limit-train", type=int, default=None, help="train on the first N training pairs only (smoke runs)")
    parser.add_argument("--n-eval", type=int, default=None, help="evaluate on the first N held-out pairs only (smoke runs)")


def load_data(n_train: int, limit_train: int | None, n_eval: int | None):
    """(train, held-out) PreferencePairs, the training pairs tagged `short`/`long` for MORE."""
    import dataclasses

    from selfrefine.data import DataSource, load_pairs

    source = DataSource(kind="local", path=str(DATA), dimension=DIMENSION, on_invalid="skip")
    train = load_pairs(source.model_copy(update={"limit": n_train}))
    held_out = load_pairs(source.model_copy(update={"skip": n_train}))
    train, held_out = train[:limit_train], held_out[:n_eval]
    median = statistics.median(context_chars(p) for p in train)
    train = [dataclasses.replace(p, source="short" if context_chars(p) <= median else "long") for p in train]
    return train, held_out, median


def context_chars(pair) -> int:
    return sum(len(turn["content"]) for turn in pair.context)


def train_generative(train, out: Path, args):
    from selfrefine.models.judge_info import write_judge_info
    from selfrefine.models.loading import load_tokenizer
    from selfrefine.models.training.sft import train_sft

    parts = tuple(p.strip() for p in args.generative_parts.split(",") if p.strip())
    batch = 8 * len(parts)  # 4 pairs per step; a pair gives 2 examples per part, kept in one batch
    examples, too_long, truncated = build_examples([(p.context, p.chosen, p.rejected) for p in train],
                                                   load_tokenizer(args.model), parts, args.max_tokens, seed=args.seed,
                                                   pairs_per_batch=4)
    config = recipe_config(lr=args.generative_lr, batch_size=batch, grad_accum=1, max_prompt_tokens=args.max_tokens,
                           seed=args.seed, train_last_layers=args.train_last_layers)
    result = train_sft(args.model, examples, out, config)
    write_judge_info(out, "generative")
    layers = f"last {args.train_last_layers} blocks" if args.train_last_layers else "LoRA r=16"
    return result, (f"SFT on {'+'.join(parts)} prompts, lr {args.generative_lr:g}, {batch} examples/step "
                    f"(4 pairs of similar length), {layers}; "
                    f"{len(examples)} examples, {truncated} pairs with responses cut to fit"
                    + (f", {too_long} left out (hindsight text too long)" if too_long else "") + "; scored by "
                    f"{'the pairwise prompt' if args.generative_eval == 'pairwise' else 'absolute Yes log-odds'}")


def train_reward(kind: str, train, out: Path, args):
    from datasets import Dataset

    from selfrefine.models.loading import load_tokenizer
    from selfrefine.models.training.config import LoraSettings
    from selfrefine.models.training.reward import reward_rows, train_reward_head
    from selfrefine.models.training.reward_config import GRMSettings, MORESettings, ODINSettings, RewardRecipeConfig

    margin_per_gap = getattr(args, "margin_per_gap", 0.0)  # only bench/dimension_mix.py sets these two
    odin = getattr(args, "odin", False)
    rows, turns_cut = reward_rows(train, load_tokenizer(args.model), args.max_tokens,
                                  input_format=args.reward_input_format, margin_per_gap=margin_per_gap)
    config = RewardRecipeConfig(train_last_layers=args.train_last_layers, group_by_length=kind != "more" and not odin,
        learning_rate=args.reward_lr, num_epochs=args.epochs, per_device_batch_size=args.reward_batch_size,
        max_length=args.max_tokens + 8, seed=args.seed, lr_scheduler="cosine", warmup_ratio=0.05,
        lora=LoraSettings(r=args.reward_lora_r, alpha=2 * args.reward_lora_r, dropout=0.0) if args.reward_lora_r else None,
        grm=GRMSettings(regularizer="sft", alpha=args.grm_alpha) if kind == "grm" else None,
        more=MORESettings() if kind == "more" else None, input_format=args.reward_input_format,
        margin_per_gap=margin_per_gap, odin=ODINSettings() if odin else None)
    result = train_reward_head(args.model, Dataset.from_list(rows), out, config)
    layers = f"last {args.train_last_layers} blocks" if args.train_last_layers else "full fine-tune"
    note = (f"lr {args.reward_lr:g}, {args.epochs:g} epoch(s), {args.reward_batch_size} pairs/step, {layers}, "
            f"{args.reward_input_format} layout; " + (f"margin {margin_per_gap:g} per preference gap; " if margin_per_gap else "") +
            (f"GRM (sft) α={args.grm_alpha:g}; " if kind == "grm" else "") + ("ODIN length head; " if odin else "") +
            f"{len(rows)} pairs, {turns_cut} context turns cut")
    if kind == "more":
        lambdas = json.loads((out / "training_log.json").read_text())["more_lambdas"]
        means = {name: statistics.mean(e["lambdas"][name] for e in lambdas) for name in lambdas[0]["lambdas"]}
        note += "; mean λ " + ", ".join(f"{name} {value:.3f}" for name, value in sorted(means.items()))
    return result, note


def evaluate(path: Path, held_out, max_tokens: int, by_absolute: bool = False) -> dict:
    start = time.perf_counter()
    return {**summary(verdicts(path, held_out, max_tokens, by_absolute)), "eval_seconds": time.perf_counter() - start}


def verdicts(path: Path, held_out, max_tokens: int, by_absolute: bool = False) -> list:
    """The judge's `PairVerdict` on each held-out pair, the human-chosen response as response_a."""
    from selfrefine.models.judge_kind import load_judge
    from selfrefine.models.judge_modes import verdicts_from_absolute
    from selfrefine.models.judge_types import PairItem

    judge = load_judge(str(path), max_length=max_tokens)  # bf16 where the CPU runs it natively
    items = [PairItem(p.context, p.chosen, p.rejected, p.dimension) for p in held_out]
    return verdicts_from_absolute(judge, items) if by_absolute else judge.compare(items)


def summary(pair_verdicts) -> dict:
    from selfrefine.scoring.metrics import pairwise_metrics

    metrics = pairwise_metrics(pair_verdicts)
    return {"accuracy": metrics["accuracy"], "accuracy_se": metrics["accuracy_se"], "ece": metrics["calibration"]["ece"],
            "consistency": metrics["position_consistency"]}


def table(rows: dict[str, dict], kept: dict[str, str] | None = None) -> list[str]:
    lines = ["| judge | held-out accuracy | ECE | order consistency | train steps | train s | notes |",
             "|---|---|---|---|---|---|---|"]
    for kind in KINDS:
        if kind not in rows:
            if kind in (kept or {}):
                lines.append(kept[kind])
            continue
        r = rows[kind]
        lines.append(f"| {LABELS[kind]} | {r['accuracy']:.3f} | {r['ece']:.3f} | {r['consistency']:.2f} | {r['steps']} "
                     f"| {r['train_seconds']:.0f} | {r['note']} |")
    return lines


def kept_rows(measured: set[str]) -> dict[str, str]:
    """Table rows of bench/RESULTS.md for the kinds not measured in this run, by kind."""
    section = read_section(SECTION) or ""
    return {kind: line for kind in KINDS if kind not in measured
            for line in section.splitlines() if line.startswith(f"| {LABELS[kind]} |")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--max-tokens", type=int, default=384, help="judge inputs are fitted to this many tokens")
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the training pairs (reward heads)")
    parser.add_argument("--reward-lr", type=float, default=3e-5, help="reward-head learning rate (backbone and head)")
    parser.add_argument("--reward-batch-size", type=int, default=8, help="pairs per reward-head step")
    parser.add_argument("--reward-input-format", choices=("plain", "chat_template"), default="plain",
                        help="how the reward heads read a conversation (reward_recipe.input_format)")
    parser.add_argument("--reward-lora-r", type=int, default=0, help="LoRA rank for the reward heads (0 = full fine-tune)")
    parser.add_argument("--grm-alpha", type=float, default=0.01, help="GRM regulariser weight α")
    parser.add_argument("--train-last-layers", type=int, default=None,
                        help="every judge trains only the last N blocks (default: full fine-tune for reward heads, "
                             "LoRA r=16 for the generative judge)")
    parser.add_argument("--generative-lr", type=float, default=1e-4, help="generative judge learning rate")
    parser.add_argument("--generative-parts", default="absolute",
                        help="generative training examples: absolute, pairwise or both (comma-separated)")
    parser.add_argument("--generative-eval", choices=("absolute", "pairwise"), default="absolute",
                        help="how the generative judge compares a pair: absolute Yes log-odds or the pairwise prompt")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="keep the trained judges in this directory")
    args = parser.parse_args()
    start_logging()
    if missing_data(DATA):
        return

    quiet_progress_bars()

    train, held_out, median = load_data(args.n_train, args.limit_train, args.n_eval)
    sources = {s: sum(p.source == s for p in train) for s in ("short", "long")}
    data_line = (f"{len(train)} training pairs ({sources['short']} short / {sources['long']} long, split at "
                 f"{median:.0f} context characters), {len(held_out)} held-out pairs")
    print(f"data: {data_line}")
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="judges-") as scratch:
        root = Path(args.output) if args.output else Path(scratch)
        kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown:
            parser.error(f"--kinds: unknown {unknown}; kinds are {', '.join(KINDS)}")
        for kind in kinds:
            out = root / kind
            trainer = train_generative if kind == "generative" else lambda t, o, a, k=kind: train_reward(k, t, o, a)
            result, note = trainer(train, out, args)
            by_absolute = kind == "generative" and args.generative_eval == "absolute"
            rows[kind] = {**evaluate(out, held_out, args.max_tokens, by_absolute), "steps": result.steps,
                          "train_seconds": result.seconds, "note": note}
            r = rows[kind]
            print(f"{LABELS[kind]}: accuracy {r['accuracy']:.3f}, ECE {r['ece']:.3f}, {result.steps} steps in "
                  f"{result.seconds:.0f} s ({result.seconds / max(result.steps, 1):.1f} s/step); {note}")

    print("\n".join(table(rows)))
    lines = table(rows, kept_rows(set(rows)))
    smoke = args.limit_train is not None or args.n_eval is not None
    if smoke:
        print("smoke run (--limit-train/--n-eval): bench/RESULTS.md left unchanged")
    else:
        command = command_line()
        write_section(SECTION, ["## Judge kinds (bench/judges.py)", "", f"Last run: `{command}` (seed {args.seed}, "
                       f"{reading_label()}), model `{args.model}`, dimension `{DIMENSION}`; {data_line}. Reward heads: linear head, "
                       f"{f'LoRA r={args.reward_lora_r}' if args.reward_lora_r else 'no LoRA'}; GRM α={args.grm_alpha:g}. "
                       "Rows from earlier --kinds runs are kept; each row's notes give its training settings. "
                       "ECE is that of P(chosen better) over both orders (10 bins).",
                       "", *lines])
    result = " ".join(f"{k}_acc={rows[k]['accuracy']:.3f}" for k in rows)
    print(f"RESULT {result} " + " ".join(f"{k}_ece={rows[k]['ece']:.3f}" for k in rows))


if __name__ == "__main__":
    main()
