"""The judge's training examples from labelled pairs: Chain-of-Hindsight texts and the absolute and
pairwise evaluation prompts, with their answers as completions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from selfrefine.data import PreferencePair
from selfrefine.errors import ConfigError
from selfrefine.models import prompts as P
from selfrefine.models.dimensions import get_dimension

ExampleKind = Literal["hindsight", "absolute", "pairwise"]


def build_judge_examples(pairs: Sequence[PreferencePair], kinds: Sequence[ExampleKind], *,
                         tokenizer=None, max_prompt_tokens: int = 768, max_length: int | None = None,
                         extra_dimensions: Mapping[str, str] | None = None) -> tuple[list[list[dict]], int, int]:
    """(prompt, completion) training examples from labelled pairs, one list per pair; how many
    turns were cut; and how many pairs had their responses cut.

    An evaluation prompt is fitted to `max_prompt_tokens` by cutting its oldest context turns. When
    its responses alone are too long for the trainer's `max_length` (room left for the one-token
    answer), they lose their tails (`prompts.fit_with_responses`), as the judge reading them later
    cuts them: no pair is left out, and its answer is never cut away by the trainer.

    Pairwise examples come in both orders so the judge cannot learn a position bias; absolute
    examples label the chosen response " Yes" and the rejected one " No".
    """
    groups: list[list[dict]] = []
    turns_cut = pairs_truncated = 0

    for pair in pairs:
        dim = get_dimension(pair.dimension, extra_dimensions)
        ctx, good, bad = pair.context, pair.chosen, pair.rejected
        examples: list[dict] = []
        cut = responses_cut = 0

        def fitted(render, responses: tuple[str, ...]) -> str:
            nonlocal cut, responses_cut
            if tokenizer is None:
                return render(list(ctx), responses)
            if max_length is None:
                r = P.fit_to_budget(lambda c: render(c, responses), ctx, tokenizer, max_prompt_tokens)
            else:
                r = P.fit_with_responses(render, ctx, responses, tokenizer, min(max_prompt_tokens, max_length - 1),
                                         response_budget=max_length - 1)
                if r.over_budget:
                    raise ConfigError(f"a judge training prompt takes {r.n_tokens} tokens with no context and its "
                                      f"responses cut to nothing: more than max_length={max_length} allows; "
                                      "raise the recipe's max_length")
            cut, responses_cut = cut + r.turns_cut, responses_cut + r.responses_cut
            return r.text

        if "hindsight" in kinds:
            for order in ("chosen_first", "rejected_first"):
                prompt, completion = P.hindsight_example(ctx, good, bad, dim, order=order)
                examples.append({"prompt": prompt, "completion": completion})
        if "absolute" in kinds:
            for response, answer in ((good, P.YES), (bad, P.NO)):
                text = fitted(lambda c, rs: P.absolute_prompt(c, rs[0], dim), (response,))
                examples.append({"prompt": text, "completion": answer})
        if "pairwise" in kinds:
            for a, b, answer in ((good, bad, P.OPTION_A), (bad, good, P.OPTION_B)):
                text = fitted(lambda c, rs: P.pairwise_prompt(c, *rs, dim), (a, b))
                examples.append({"prompt": text, "completion": answer})
        groups.append(examples)
        turns_cut += cut
        pairs_truncated += responses_cut > 0
    return groups, turns_cut, pairs_truncated
