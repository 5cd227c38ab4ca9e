"""Judge training on the packaged model: pairwise accuracy on held-out hh-rlhf pairs, zero-shot vs trained.

Data: ../shared/data/hh-rlhf-harmless-dev.jsonl.gz (1,000 human-labelled harmless-base pairs). The
first 800 records train, the last 200 evaluate (the 2 records whose two transcripts differ before the
final response are skipped). The dimension is `harmless`.

Training examples (each part can be switched on or off), built with `selfrefine.models.prompts`:
- pairwise: the pairwise evaluation prompt in both orders, completion = the better option (" A"/" B");
- absolute: the absolute prompt for each response, completion " Yes" (chosen) / " No" (rejected);
- hindsight: the Chain-of-Hindsight text (both responses in the completion), chosen-first order.
Prompts are fitted to --max-prompt-tokens by cutting the oldest context turns.

Evaluation (`--eval`, one or both modes), zero-shot and after training, on the same held-out pairs:
- pairwise: the pairwise prompt of each pair in both orders (`Judge.compare`); reported: accuracy of
  the order-averaged verdict (the headline), the accuracy of each order on its own, the rate of " A"
  answers (position bias) and how often both orders agree;
- absolute: the absolute Yes/No prompt of each response (`Judge.score_absolute`); a pair is judged
  right when the chosen response has the higher P(Yes) (the headline) and, as the evaluate stage
  reports it, when it has the higher paper score (+1/-1 + log-prob of the answer).

    python bench/judge_training.py [--lr 2e-4] [--epochs 1] [--lora-r 16 | --full | --train-last-layers 8]
                                   [--parts pairwise,absolute] [--eval pairwise,absolute]

The recipe measured for the note (generative judge, absolute Yes/No training, last 8 blocks):

    python bench/judge_training.py --parts absolute --eval absolute --train-last-layers 8 --lr 1e-4 --batch-size 8 --grad-accum 1
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/harness.py

from harness import missing_data, quiet_progress_bars, start_logging  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-dev.jsonl.gz"
DIMENSION = "harmless"
PARTS = ("pairwise", "absolute", "hindsight")


def load_split(path: Path, n_train: int = 800):
    """(train, eval) lists of (context, chosen, rejected); records that are not a clean pair are skipped."""
    from selfrefine.data.fields import RecordError
    from selfrefine.data.hh import hh_pair
    from selfrefine.data.readers import iter_records

    train, held_out, skipped = [], [], 0
    for index, (_, record) in enumerate(iter_records(path)):
        try:
            pair = hh_pair(record["chosen"], record["rejected"])
        except RecordError:
            skipped += 1
            continue
        (train if index < n_train else held_out).append(pair)
    return train, held_out, skipped


def fitted(render, context, responses: tuple[str, ...], tokenizer, max_tokens: int) -> tuple[str, int]:
    """`render(context, responses)` fitted to `max_tokens` as the project's judges fit it (the oldest
    turns first, then the responses' tails), and how many responses lost their tail."""
    from selfrefine.models.prompts import fit_with_responses

    fit = fit_with_responses(render, context, responses, tokenizer, max_tokens)
    if fit.over_budget:
        raise SystemExit(f"a judge prompt takes {fit.n_tokens} tokens with no context and empty responses: more "
                         f"than --max-tokens {max_tokens}")
    return fit.text, fit.responses_cut


def pair_examples(pair, index: int, tokenizer, parts: tuple[str, ...], max_tokens: int, both_orders: bool):
    """One pair's (prompt, completion) examples ([] if its hindsight text cannot fit `max_tokens`), and
    whether any of its responses lost their tail to fit.

    `both_orders=False` shows the pairwise prompt once: chosen as OPTION A for even `index`, as B for odd.
    """
    from selfrefine.models.prompts import (
        NO, OPTION_A, OPTION_B, YES, absolute_prompt, fit_to_budget, hindsight_example, pairwise_prompt,
    )

    context, chosen, rejected = pair
    examples, cut = [], 0

    def add(render, responses, answer):
        nonlocal cut
        text, n_cut = fitted(render, context, responses, tokenizer, max_tokens)
        examples.append((text, answer))
        cut += n_cut

    def pairwise(c, rs):
        return pairwise_prompt(c, *rs, DIMENSION)

    if "pairwise" in parts:
        if both_orders or index % 2 == 0:
            add(pairwise, (chosen, rejected), OPTION_A)
        if both_orders or index % 2 == 1:
            add(pairwise, (rejected, chosen), OPTION_B)
    if "absolute" in parts:
        add(lambda c, rs: absolute_prompt(c, rs[0], DIMENSION), (chosen,), YES)
        add(lambda c, rs: absolute_prompt(c, rs[0], DIMENSION), (rejected,), NO)
    if "hindsight" in parts:
        # Fit prompt + completion together: the completion holds both responses.
        fit = fit_to_budget(lambda c: "\x00".join(hindsight_example(c, chosen, rejected, DIMENSION)), context,
                            tokenizer, max_tokens)
        if fit.over_budget:
            return [], False
        examples.append(tuple(fit.text.split("\x00")))
    return examples, cut > 0


def build_examples(pairs, tokenizer, parts: tuple[str, ...], max_tokens: int, *, epochs: int = 1, seed: int = 0,
                   both_orders: bool = True, pairs_per_batch: int | None = None):
    """The judge's SFT examples, laid out for sequential training: `epochs` passes over the pairs, each in a
    fresh seeded order, with one pair's examples kept adjacent. With a batch size that is a multiple of
    a pair's example count, both orders of a pairwise prompt (and the Yes and No absolute prompts) share
    a batch, so the gradient towards always answering A (or Yes) cancels within every step.

    `pairs_per_batch` (the batch size over a pair's example count) also groups pairs of similar length
    into the same batch, the way transformers' LengthGroupedSampler does for single examples: each
    epoch's shuffled pairs are cut into windows of 16 batches, sorted by length within a window,
    batched, and the batches shuffled. Less of every step goes into padding; the order stays seeded.

    Returns (dataset, pairs dropped because their hindsight text did not fit `max_tokens`, pairs whose
    responses lost their tails to fit it).
    """
    from datasets import Dataset

    built = [pair_examples(pair, index, tokenizer, parts, max_tokens, both_orders) for index, pair in enumerate(pairs)]
    groups = [group for group, _ in built]
    truncated = sum(cut for _, cut in built)
    kept = [group for group in groups if group]
    rng = random.Random(seed)
    rows = []
    for _ in range(epochs):
        order = kept[:]
        rng.shuffle(order)
        if pairs_per_batch:
            order = length_grouped(order, tokenizer, pairs_per_batch, rng)
        rows.extend(example for group in order for example in group)
    dataset = Dataset.from_dict({"prompt": [p for p, _ in rows], "completion": [c for _, c in rows]})
    return dataset, len(groups) - len(kept), truncated


def length_grouped(groups, tokenizer, pairs_per_batch: int, rng: random.Random, window_batches: int = 16):
    """`groups` (a pair's examples each) reordered into batches of `pairs_per_batch` similar-length pairs."""
    def length(group):
        return max(len(tokenizer(prompt + completion)["input_ids"]) for prompt, completion in group)

    window = pairs_per_batch * window_batches
    batches = []
    for start in range(0, len(groups), window):
        chunk = sorted(groups[start:start + window], key=length, reverse=True)
        batches.extend(chunk[i:i + pairs_per_batch] for i in range(0, len(chunk), pairs_per_batch))
    rng.shuffle(batches)
    return [group for batch in batches for group in batch]


EVAL_MODES = ("pairwise", "absolute")


def pairwise_accuracy(judge, pairs) -> dict[str, float]:
    """Accuracy of the project's judge (`Judge.compare`, both orders in one batched pass) on held-out pairs.

    Each pair is presented with the chosen response as `response_a`; the judge's verdict averages
    P(chosen better) over the two presentation orders, so position bias cancels. Also reported: the
    accuracy of each order on its own, the rate of " A" answers and how often both orders agree.
    """
    from selfrefine.models.judge_types import PairItem

    verdicts = judge.compare([PairItem(context, chosen, rejected, DIMENSION) for context, chosen, rejected in pairs])
    n = len(verdicts)
    forward = sum(v.p_a_forward > 0.5 for v in verdicts)  # chosen shown as A, judge says A
    swapped = sum(v.p_a_swapped > 0.5 for v in verdicts)  # chosen shown as B, judge says B
    return {"accuracy": sum(v.verdict == "A" for v in verdicts) / n,
            "per_order_accuracy": (forward + swapped) / (2 * n),
            "a_rate": (forward + n - swapped) / (2 * n),
            "consistency": sum(v.consistent for v in verdicts) / n}


def absolute_accuracy(judge, pairs) -> dict[str, float]:
    """Pairwise accuracy of the judge's absolute scores: each response of a pair is scored on its own
    (`Judge.score_absolute`, one batched pass) and the pair is right when the chosen one scores higher.

    `accuracy` compares P(Yes); `score_accuracy` compares the paper score, as the evaluate stage's
    `absolute.accuracy` does (within the No band a more confident No scores higher, so the two differ).
    """
    from selfrefine.models.judge_modes import verdicts_from_scores
    from selfrefine.models.judge_types import AbsoluteItem
    from selfrefine.scoring.metrics import absolute_metrics, pairwise_metrics

    items = [AbsoluteItem(context, response, DIMENSION) for context, chosen, rejected in pairs
             for response in (chosen, rejected)]
    scores = judge.score_absolute(items)
    chosen, rejected = scores[0::2], scores[1::2]
    by_p_yes = pairwise_metrics(verdicts_from_scores(chosen, rejected))["accuracy"]  # as evaluate's absolute reading
    metrics = absolute_metrics(chosen, rejected)
    return {"accuracy": by_p_yes, "score_accuracy": metrics["accuracy"],
            "yes_rate_chosen": metrics["yes_rate_chosen"], "yes_rate_rejected": metrics["yes_rate_rejected"],
            "ece": metrics["calibration"]["ece"]}


def evaluate(model_name: str, pairs, max_tokens: int, modes: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """The requested evaluation modes of one judge, by mode."""
    from selfrefine.models.judge import Judge

    judge = Judge.from_pretrained(model_name, max_length=max_tokens)  # bf16 where the CPU runs it natively
    measure = {"pairwise": pairwise_accuracy, "absolute": absolute_accuracy}
    return {mode: measure[mode](judge, pairs) for mode in modes}


def recipe_config(*, lr: float = 2e-4, batch_size: int = 4, grad_accum: int = 2, max_prompt_tokens: int = 384,
                  seed: int = 0, precision: str = "auto", lora_r: int = 16, full: bool = False,
                  train_last_layers: int | None = None):
    """The generative judge's SFT recipe as this benchmark runs it (the defaults are its command-line defaults).

    `train_last_layers` fine-tunes only the last N blocks (no LoRA); `full` every weight.
    """
    from selfrefine.models.training.config import LoraSettings, SFTRecipeConfig

    return SFTRecipeConfig(
        learning_rate=lr, num_epochs=1, per_device_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum, max_length=max_prompt_tokens + 8, seed=seed,
        shuffle=False,  # build_examples already shuffled pairs per epoch and keeps a pair's examples together
        lr_scheduler="cosine", warmup_ratio=0.05, bf16={"auto": "auto", "bf16": True, "fp32": False}[precision],
        train_last_layers=train_last_layers,
        lora=None if full or train_last_layers else LoraSettings(r=lora_r, alpha=2 * lora_r, dropout=0.0))


def describe(scores: dict[str, dict[str, float]]) -> str:
    parts = []
    if "pairwise" in scores:
        s = scores["pairwise"]
        parts.append(f"pairwise prompt: accuracy {s['accuracy']:.3f} (per order {s['per_order_accuracy']:.3f}, "
                     f"says A {s['a_rate']:.2f}, orders agree {s['consistency']:.2f})")
    if "absolute" in scores:
        s = scores["absolute"]
        parts.append(f"absolute prompts: accuracy {s['accuracy']:.3f} by P(Yes), {s['score_accuracy']:.3f} by score "
                     f"(Yes for chosen {s['yes_rate_chosen']:.2f}, for rejected {s['yes_rate_rejected']:.2f}, "
                     f"ECE {s['ece']:.3f})")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="packaged", help="base model alias or directory")
    parser.add_argument("--parts", default="pairwise,absolute", help=f"comma-separated subset of {PARTS}")
    parser.add_argument("--one-order", action="store_true",
                        help="each training pair's pairwise prompt in one order only (alternating A/B)")
    parser.add_argument("--lr", type=float, default=2e-4, help="peak learning rate")
    parser.add_argument("--epochs", type=int, default=1, help="passes over the training pairs")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank (alpha = 2 × rank)")
    parser.add_argument("--full", action="store_true", help="full fine-tune instead of LoRA")
    parser.add_argument("--train-last-layers", type=int, default=None,
                        help="fine-tune only the last N blocks instead of LoRA (the lower blocks and embeddings stay frozen)")
    parser.add_argument("--eval", default="pairwise", help=f"comma-separated subset of {EVAL_MODES}")
    parser.add_argument("--group-by-length", action="store_true",
                        help="batch pairs of similar length together (a pair's examples still share a batch)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="training precision: auto = bf16 autocast where the hardware runs it natively")
    parser.add_argument("--max-prompt-tokens", type=int, default=384)
    parser.add_argument("--n-train", type=int, default=800, help="records used for training (the rest evaluate)")
    parser.add_argument("--n-eval", type=int, default=None, help="evaluate on the first N held-out pairs only (smoke tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="where to keep the trained judge (default: a temp dir)")
    parser.add_argument("--skip-zero-shot", action="store_true", help="skip the zero-shot evaluation (trials only)")
    args = parser.parse_args()
    start_logging()
    quiet_progress_bars()

    from selfrefine.models.loading import load_tokenizer
    from selfrefine.models.training.sft import train_sft

    if missing_data(DATA):
        return
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    if not parts or set(parts) - set(PARTS):
        sys.exit(f"--parts must be a comma-separated subset of {PARTS}, got {args.parts!r}")
    modes = tuple(m.strip() for m in args.eval.split(",") if m.strip())
    if not modes or set(modes) - set(EVAL_MODES):
        sys.exit(f"--eval must be a comma-separated subset of {EVAL_MODES}, got {args.eval!r}")

    train_pairs, eval_pairs, skipped = load_split(DATA, args.n_train)
    eval_pairs = eval_pairs[:args.n_eval]
    tokenizer = load_tokenizer(args.model)
    per_pair = 2 * len(parts) - ("pairwise" in parts and args.one_order) - ("hindsight" in parts)
    if args.group_by_length and args.batch_size % per_pair:
        sys.exit(f"--group-by-length keeps a pair's {per_pair} examples in one batch: --batch-size must be a "
                 f"multiple of {per_pair}")
    examples, too_long, truncated = build_examples(
        train_pairs, tokenizer, parts, args.max_prompt_tokens, epochs=args.epochs, seed=args.seed,
        both_orders=not args.one_order, pairs_per_batch=args.batch_size // per_pair if args.group_by_length else None)
    print(f"data: {len(train_pairs)} training pairs ({truncated} with responses cut to fit {args.max_prompt_tokens} "
          f"tokens, {too_long} left out: a hindsight text longer than that even with the context cut), "
          f"{len(eval_pairs)} held-out pairs, {skipped} records skipped; {len(examples)} training examples "
          f"({'+'.join(parts)}, {args.epochs} epoch(s))")

    zero_shot: dict[str, dict[str, float]] = {}
    if not args.skip_zero_shot:
        start = time.perf_counter()
        zero_shot = evaluate(args.model, eval_pairs, args.max_prompt_tokens, modes)
        print(f"zero-shot: {describe(zero_shot)} ({time.perf_counter() - start:.0f} s for {len(eval_pairs)} pairs)")

    config = recipe_config(lr=args.lr, batch_size=args.batch_size, grad_accum=args.grad_accum,
                           max_prompt_tokens=args.max_prompt_tokens, seed=args.seed, precision=args.precision,
                           lora_r=args.lora_r, full=args.full, train_last_layers=args.train_last_layers)
    with tempfile.TemporaryDirectory(prefix="judge-") as scratch:
        output = Path(args.output) if args.output else Path(scratch) / "judge"
        result = train_sft(args.model, examples, output, config)
        start = time.perf_counter()
        trained = evaluate(str(output), eval_pairs, args.max_prompt_tokens, modes)
        eval_seconds = time.perf_counter() - start

    losses = [loss for _, loss in result.loss_history]
    head, tail = losses[: max(1, len(losses) // 10)], losses[-max(1, len(losses) // 10):]
    how = (f"last {args.train_last_layers} blocks" if args.train_last_layers else "full" if args.full
           else f"LoRA r={args.lora_r}")
    print(f"training: {how}, lr {args.lr:g}, {result.steps} steps "
          f"(batch {args.batch_size}×{args.grad_accum}) on {result.num_examples} examples in {result.seconds:.0f} s "
          f"({result.seconds / max(result.steps, 1):.2f} s/step); loss {sum(head) / len(head):.3f} (first 10%) -> "
          f"{sum(tail) / len(tail):.3f} (last 10%)")
    print(f"trained:   {describe(trained)} ({eval_seconds:.0f} s)")
    figures = " ".join(f"{when}_{mode}_accuracy={scores[mode]['accuracy']:.3f}"
                       for when, scores in (("zero_shot", zero_shot), ("trained", trained)) for mode in scores)
    print(f"RESULT {figures} train_seconds={result.seconds:.0f} steps={result.steps}")


if __name__ == "__main__":
    main()
