"""Levers for the harmless judge: what the chat-template reward head is shown, chosen on a validation
split of the training pairs and then measured once on the held-out pairs.

The independent check named in the judges issue rendered the whole conversation with the model's chat
template as is (its default system turn) and cut the oldest tokens at 512. `reward_recipe.input_format:
chat_template` differs in two ways: the dimension's definition is the system turn, and a conversation
too long for max_length loses whole turns, oldest first. This bench crosses the two:

- system turn: the dimension's `definition` (the project's layout) or the template's `default`;
- context cut: whole `turns` (the project's), the oldest `tokens` of the rendered prompt (the check's,
  which can cut into the system turn), or `fill`: whole turns, then the start of the last turn dropped
  comes back as far as it fits (the system turn kept, the budget used to the token).

The variants are rendered by this script, in place of `reward_judge.reward_input`, during both
training and scoring, so each head reads at scoring time what it was trained on. Everything else is
bench/warm_heads.py's recipe (last 8 blocks, lr 5e-5, 4 pairs a step, one epoch, cosine, 504 tokens,
seed 0). As in bench/harmless_depth.py:

1. every variant trains on the first 640 of the 800 training pairs and is scored on the other 160;
2. the variant with the best validation accuracy is chosen (a tie goes to the earlier one in the list
   above, the project's layout first);
3. that variant trains again on all 800 pairs and is measured once on the 195 held-out pairs.

    python bench/harmless_layout.py [--variants definition+turns,default+tokens] [--keep DIR]
        [--validation-only] [--limit-train 16 --n-eval 8]

With --keep, a head already trained there by the same recipe and variant is reused with its
validation reading, so separate processes can train variants (--validation-only) before one run
chooses. A variant trains for about 15 minutes on two cores with native bfloat16. Full runs write this
script's section of bench/RESULTS.md; --limit-train or --n-eval runs are smoke runs and leave it alone.

Last line: RESULT chosen=… harmless_acc=… harmless_ece=… val_acc_<variant>=…
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harmless_depth import split_data, validated  # noqa: E402
from harness import missing_data, publish, quiet_progress_bars, start_logging  # noqa: E402
from judge_training import DATA  # noqa: E402
from judges import add_data_arguments, evaluate  # noqa: E402
from warm_heads import head_recipe, trained_head  # noqa: E402

SECTION = "bench/harmless_layout.py"
VARIANTS = ("definition+turns", "definition+tokens", "default+turns", "default+tokens", "definition+fill")
RESERVED = 2  # tokens `reward_judge.reward_input` leaves free: EOS and a boundary that may move


def recipe(model: str, variant: str) -> dict:
    """bench/warm_heads.py's recipe; `layout` only keys the kept heads (the rendering is `rendered_as`)."""
    return head_recipe(model, layout=variant)


def chat_prompt(context, dimension, tokenizer, system: str) -> str:
    """The conversation in the chat template up to the assistant header, the system turn by `system`."""
    from selfrefine.models import prompts

    if system == "definition":
        return prompts.chat_reward_prompt(context, dimension, tokenizer)
    prompts.render_context(context)  # the same role and content checks
    return tokenizer.apply_chat_template([{"role": t["role"], "content": t["content"]} for t in context],
                                         tokenize=False, add_generation_prompt=True)


def variant_input(variant: str):
    """A stand-in for `reward_judge.reward_input` (same signature) that renders `variant`."""
    from selfrefine.models import prompts
    from selfrefine.models.reward_judge import RewardInput

    system, cut = variant.split("+")

    def reward_input(context, response, dimension, tokenizer, max_length, *, fit_for=None, input_format="chat_template"):
        longest = fit_for if fit_for is not None else response
        budget = max_length - RESERVED

        def render(ctx) -> str:
            return chat_prompt(ctx, dimension, tokenizer, system) + longest

        if cut == "tokens":
            prompt = chat_prompt(context, dimension, tokenizer, system)
            room = max(budget - prompts.count_tokens(tokenizer, longest), 16)
            offsets = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            cut_here = offsets[-room][0] if len(offsets) > room else 0
            return RewardInput(prompt=prompt[cut_here:], completion=response, turns_cut=int(cut_here > 0))
        fitted = prompts.fit_to_budget(render, context, tokenizer, max_length, reserve_tokens=RESERVED)
        text = fitted.text
        if cut == "fill" and fitted.turns_cut and not fitted.chars_cut:
            text = refill(render, context, fitted.turns_cut, tokenizer, budget) or text
        return RewardInput(prompt=text[: len(text) - len(longest)], completion=response, turns_cut=fitted.turns_cut)

    return reward_input


def refill(render, context, turns_cut: int, tokenizer, budget: int) -> str | None:
    """`render` with the last whole turn dropped put back, losing the fewest start characters that fit
    `budget`: `fit_to_budget` with every turn kept whole cuts the oldest one from its start. None when
    not even a character of it fits."""
    from selfrefine.models import prompts

    turns = context[turns_cut - 1:]
    fitted = prompts.fit_to_budget(render, turns, tokenizer, budget, keep_last_turns=len(turns))
    if fitted.over_budget or fitted.chars_cut >= len(turns[0]["content"]):
        return None
    return fitted.text


@contextlib.contextmanager
def rendered_as(variant: str) -> Iterator[None]:
    """Reward heads trained or scored inside read `variant` (training's `reward_rows` and the judge
    both call `reward_judge.reward_input` through the module)."""
    from selfrefine.models import reward_judge

    original = reward_judge.reward_input
    reward_judge.reward_input = variant_input(variant)
    try:
        yield
    finally:
        reward_judge.reward_input = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    add_data_arguments(parser)
    parser.add_argument("--keep", default=None, help="keep every head in this directory (and reuse them)")
    parser.add_argument("--validation-only", action="store_true",
                        help="train and validate the variants, then stop (to train them in separate processes)")
    args = parser.parse_args()
    variants = [v for v in VARIANTS if v in {s.strip() for s in args.variants.split(",")}]
    unknown = {s.strip() for s in args.variants.split(",") if s.strip()} - set(VARIANTS)
    if unknown or not variants:
        parser.error(f"--variants: choose from {', '.join(VARIANTS)}")
    start_logging()
    if missing_data(DATA):
        return

    quiet_progress_bars()
    train, fit, validation_pairs, held_out = split_data(args)
    validation: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="layout-") as scratch:
        root = Path(args.keep) if args.keep else Path(scratch)
        for variant in variants:
            r = recipe(args.model, variant)
            with rendered_as(variant):
                trained = trained_head(root / f"fit-{variant}", fit, r, seed=0)
                v = validation[variant] = {**validated(root / f"fit-{variant}", validation_pairs, r["max_tokens"]),
                                           "seconds": trained["seconds"], "steps": trained["steps"]}
            print(f"{variant}: validation accuracy {v['accuracy']:.3f} ± {v['accuracy_se']:.3f}, ECE {v['ece']:.3f}; "
                  f"{v['steps']} steps in {v['seconds']:.0f} s; {trained['note']}")
        if args.validation_only:
            return
        chosen = max(validation, key=lambda name: (round(validation[name]["accuracy"], 6), -VARIANTS.index(name)))
        r = recipe(args.model, chosen)
        with rendered_as(chosen):
            final = trained_head(root / f"all-{chosen}", train, r, seed=0)
            held = evaluate(root / f"all-{chosen}", held_out, r["max_tokens"])
    print(f"chosen: {chosen}; held-out accuracy {held['accuracy']:.3f} ± {held['accuracy_se']:.3f}, "
          f"ECE {held['ece']:.3f}; {final['steps']} steps in {final['seconds']:.0f} s")

    lines = [f"| system turn + context cut | validation accuracy ({len(validation_pairs)} pairs) | validation ECE |",
             "|---|---|---|"]
    for variant, v in validation.items():
        label = variant + (" (the project's chat_template)" if variant == VARIANTS[0] else "") + \
            (" (the independent check's)" if variant == "default+tokens" else "") + (" **chosen**" if variant == chosen else "")
        lines.append(f"| {label} | {v['accuracy']:.3f} ± {v['accuracy_se']:.3f} | {v['ece']:.3f} |")
    lines += ["", f"The chosen variant, {chosen}, trained on all {len(train)} pairs and measured once on the "
                  f"{len(held_out)} held-out pairs: **{held['accuracy']:.3f}** ± {held['accuracy_se']:.3f}, ECE {held['ece']:.3f}."]
    publish(SECTION, "What the harmless reward head is shown: system turn and context cut (bench/harmless_layout.py)",
            ". bench/warm_heads.py's recipe (chat template, 504 tokens, last 8 blocks, lr 5e-5, 4 pairs a step, one "
            f"epoch, cosine, seed 0); the variant chosen on the last {len(validation_pairs)} of the {len(train)} "
            "training pairs; only the chosen one is measured on the held-out pairs.",
            lines, smoke=args.limit_train is not None or args.n_eval is not None)
    figures = " ".join(f"val_acc_{name.replace('+', '_')}={v['accuracy']:.3f}" for name, v in validation.items())
    print(f"RESULT chosen={chosen} harmless_acc={held['accuracy']:.3f} harmless_ece={held['ece']:.3f} {figures}")


if __name__ == "__main__":
    main()
