"""The judge's training examples from labelled pairs: Chain-of-Hindsight texts and the absolute and
pairwise evaluation prompts, with their answers as completions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from selfrefine.data import PreferencePair
from selfrefine.models import prompts as P
from selfrefine.models.dimensions import get_dimension

ExampleKind = Literal["hindsight", "absolute", "pairwise"]


def build_judge_examples(pairs: Sequence[PreferencePair], kinds: Sequence[ExampleKind], *,
                         tokenizer=None, max_prompt_tokens: int = 768, max_length: int | None = None,
                         extra_dimensions: Mapping[str, str] | None = None) -> tuple[list[list[dict]], int, int]:
    """(prompt, completion) training examples from labelled pairs, one list per pair; how many
    turns were cut; and how many pairs were left out because a prompt still fills the trainer's
    `max_length` with its context cut to `max_prompt_tokens` (its responses alone are too long).
    The trainer would drop such an example and train its partner alone; leaving the whole pair out
    keeps each pair's examples together.

    Pairwise examples come in both orders so the judge cannot learn a position bias; absolute
    examples label the chosen response " Yes" and the rejected one " No".
    """
    groups: list[list[dict]] = []
    turns_cut = too_long = 0

    for pair in pairs:
        dim = get_dimension(pair.dimension, extra_dimensions)
        ctx, good, bad = pair.context, pair.chosen, pair.rejected
        examples: list[dict] = []
        cut, over = 0, False

        def fitted(render) -> str:
            nonlocal cut, over
            if tokenizer is None:
                return render(list(ctx))
            r = P.fit_to_budget(render, ctx, tokenizer, max_prompt_tokens)
            cut, over = cut + r.turns_cut, over or (max_length is not None and r.n_tokens >= max_length)
            return r.text

        if "hindsight" in kinds:
            for order in ("chosen_first", "rejected_first"):
                prompt, completion = P.hindsight_example(ctx, good, bad, dim, order=order)
                examples.append({"prompt": prompt, "completion": completion})
        if "absolute" in kinds:
            for response, answer in ((good, P.YES), (bad, P.NO)):
                text = fitted(lambda c, r=response: P.absolute_prompt(c, r, dim))
                examples.append({"prompt": text, "completion": answer})
        if "pairwise" in kinds:
            for a, b, answer in ((good, bad, P.OPTION_A), (bad, good, P.OPTION_B)):
                text = fitted(lambda c, a=a, b=b: P.pairwise_prompt(c, a, b, dim))
                examples.append({"prompt": text, "completion": answer})
        if over:
            too_long += 1
        else:
            groups.append(examples)
            turns_cut += cut
    return groups, turns_cut, too_long
