"""Scoring with a reward-head judge, through the same interface as the generative `Judge`.

Input, by the head's `input_format` (recorded in its judge.json):
- `plain`: `prompts.reward_prompt` (definition, context, "Assistant:") followed by " {response}";
- `chat_template`: `prompts.chat_reward_prompt` (the model's chat template, the definition as the
  system turn, ending in the assistant header) followed by "{response}";
then EOS; the reward is read at the EOS token (see `reward_head`). Training and scoring encode with
the same functions, `reward_input` and `encode_reward_input`, so the head sees at scoring time
exactly the token layout it was trained on.

How the reward maps onto the judge's outputs:
- `score_absolute`: `score` = the reward r; `answer` = "Yes" when r >= 0; `p_yes` = sigmoid(r);
  `logprob` (and `vocab_logprob`, there being no vocabulary) = log sigmoid(±r) of that answer.
  A Bradley–Terry reward is only defined up to a constant, so only differences are calibrated;
  `p_yes` is reported for completeness.
- `compare`: p_a = sigmoid(r_a − r_b), the Bradley–Terry probability that response A is better.
  Each response is scored on its own, so both presentation orders give the same answer:
  `p_a_forward == p_a_swapped == p_a` and `consistent` is always true.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from selfrefine.errors import ConfigError, ModelLoadError
from selfrefine.models import prompts as P
from selfrefine.models.dimensions import Dimension, get_dimension
from selfrefine.models.judge_info import REWARD_INPUT_FORMATS, RewardInputFormat
from selfrefine.models.judge_types import (
    AbsoluteItem, AbsoluteScore, PairItem, PairVerdict, coerce_item, sigmoid,
)
from selfrefine.models.loading import load_tokenizer, resolve_device, resolve_dtype
from selfrefine.progress import Progress

logger = logging.getLogger(__name__)


# What each layout puts between its prompt and the response: "Assistant:" is followed by a space;
# the chat template's assistant header already ends its line.
RESPONSE_PREFIX: dict[str, str] = {"plain": " ", "chat_template": ""}


@dataclass(frozen=True)
class RewardInput:
    """One (context, response) rendered for the reward head: `prompt` + `completion`."""

    prompt: str
    completion: str
    turns_cut: int = 0


def reward_input(context: Sequence[Mapping[str, str]], response: str, dimension: Dimension, tokenizer: Any,
                 max_length: int, *, fit_for: str | None = None, input_format: RewardInputFormat = "plain") -> RewardInput:
    """Render a response for the head, cutting the oldest context turns to fit `max_length` tokens.

    `fit_for` (default: `response`) is the response the context is fitted around; pass the longer
    response of a pair so that both responses are judged after the same context.
    """
    if input_format not in RESPONSE_PREFIX:
        raise ConfigError(f"reward input format must be one of {', '.join(REWARD_INPUT_FORMATS)}, got {input_format!r}")

    def render(ctx):
        if input_format == "chat_template":
            return P.chat_reward_prompt(ctx, dimension, tokenizer)
        return P.reward_prompt(ctx, dimension)

    space = RESPONSE_PREFIX[input_format]
    completion = space + response
    longest = space + (fit_for if fit_for is not None else response)
    # Two tokens spare: EOS, and a token boundary that may move when prompt and response are
    # tokenised apart (as `encode_reward_input` does) instead of as one text.
    # A response too long even without context keeps its head: `encode_reward_input` cuts its tail.
    fitted = P.fit_to_budget(lambda ctx: render(ctx) + longest, context, tokenizer, max_length, reserve_tokens=2)
    prompt = fitted.text[: len(fitted.text) - len(longest)]
    return RewardInput(prompt=prompt, completion=completion, turns_cut=fitted.turns_cut)


def encode_reward_input(tokenizer: Any, prompt: str, completion: str,
                        max_length: int | None = None) -> tuple[list[int], int]:
    """Token ids of prompt + completion + EOS, and the prompt's length in tokens.

    Prompt and completion are tokenised apart, so the response starts at a token boundary (the
    GRM regulariser scores exactly the response tokens) and the layout never depends on how the
    tokenizer would merge across the boundary. With `max_length`, a sequence that would be longer
    loses the response's tail (`reward_input` has already cut the oldest context turns): the
    example is read, not dropped, and training and scoring cut the same way.
    """
    if tokenizer.eos_token_id is None:
        raise ModelLoadError("the tokenizer has no EOS token; a reward head reads its score at the EOS token")
    bos = tokenizer.bos_token
    # A chat template that already writes the BOS token must not get a second one.
    prompt_ids = tokenizer(prompt, add_special_tokens=not (bos and prompt.startswith(bos)))["input_ids"]
    response_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if max_length is not None and len(prompt_ids) + len(response_ids) + 1 > max_length:
        keep = max_length - len(prompt_ids) - 1
        if keep < 1:
            raise ConfigError(f"a reward prompt of {len(prompt_ids)} tokens leaves no room for the response "
                              f"within max_length={max_length}; raise max_length")
        response_ids = response_ids[:keep]
    return prompt_ids + response_ids + [tokenizer.eos_token_id], len(prompt_ids)


def score_from_reward(reward: float, turns_cut: int = 0) -> AbsoluteScore:
    """A scalar reward as an absolute score (see the module docstring for how it fills the fields)."""
    yes = reward >= 0
    logprob = _log_sigmoid(reward if yes else -reward)
    return AbsoluteScore(answer="Yes" if yes else "No", score=reward, logprob=logprob, p_yes=sigmoid(reward),
                         vocab_logprob=logprob, turns_cut=turns_cut)


def verdict_from_rewards(r_a: float, r_b: float, turns_cut: int = 0) -> PairVerdict:
    """The Bradley–Terry verdict p_a = sigmoid(r_a − r_b): the same in both presentation orders."""
    p_a = sigmoid(r_a - r_b)
    return PairVerdict(verdict="A" if p_a >= 0.5 else "B", p_a=p_a, p_a_forward=p_a, p_a_swapped=p_a,
                       consistent=True, turns_cut=turns_cut)


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


class RewardHeadJudge:
    """Batched scoring with a `RewardHeadModel` and its tokenizer."""

    kind = "reward_head"

    def __init__(self, model: Any, tokenizer: Any, dimension_extra: Mapping[str, str] | None = None,
                 batch_size: int = 16, max_length: int = 1024, *, log_every_seconds: float = 30.0,
                 input_format: RewardInputFormat | None = None):
        self.model, self.tokenizer = model, tokenizer
        # The layout the head was trained on: its own record unless the caller says otherwise.
        self.input_format = input_format or getattr(model, "input_format", "plain")
        self.dimension_extra = dict(dimension_extra or {})
        self.batch_size, self.max_length = batch_size, max_length
        self.log_every_seconds = log_every_seconds
        self.truncated = 0  # responses read without their tail (longer than max_length), over all calls
        # Rewards by token sequence: an evaluation asks for the same responses twice (pairwise, then
        # absolute), and a reward depends on nothing else; the weights never change under this object.
        self._known: dict[tuple[int, ...], float] = {}

    @classmethod
    def from_pretrained(cls, path: str, *, dtype: str = "auto", device: str = "auto", **kwargs: Any) -> RewardHeadJudge:
        from selfrefine.models.reward_head import RewardHeadModel

        device = resolve_device(device)
        model = RewardHeadModel.from_pretrained(path, dtype=resolve_dtype(dtype, device), device=device)
        return cls(model, load_tokenizer(path), **kwargs)

    def dimension(self, name: str) -> Dimension:
        return get_dimension(name, self.dimension_extra)

    # -- public scoring --

    def rewards(self, items: Sequence[AbsoluteItem | Mapping]) -> list[tuple[float, int]]:
        """(reward, context turns cut) per item, in input order."""
        items = [coerce_item(i, AbsoluteItem) for i in items]
        rendered = [reward_input(it.context, it.response, self.dimension(it.dimension), self.tokenizer,
                                 self.max_length, input_format=self.input_format) for it in items]
        full = [encode_reward_input(self.tokenizer, r.prompt, r.completion)[0] for r in rendered]
        ids = [tuple(seq if len(seq) <= self.max_length else
                     encode_reward_input(self.tokenizer, r.prompt, r.completion, self.max_length)[0])
               for seq, r in zip(full, rendered)]
        cut = sum(len(seq) > self.max_length for seq in full)
        self.truncated += cut
        if cut:
            logger.warning("reward head: %d of %d responses longer than max_length=%d were read without their "
                           "tail", cut, len(items), self.max_length)
        new = list(dict.fromkeys(seq for seq in ids if seq not in self._known))
        self._known.update(zip(new, self._forward([list(seq) for seq in new])))
        return [(self._known[seq], r.turns_cut) for seq, r in zip(ids, rendered)]

    def score_absolute(self, items: Sequence[AbsoluteItem | Mapping]) -> list[AbsoluteScore]:
        """Scores in input order (see the module docstring for how the reward fills the fields)."""
        return [score_from_reward(reward, cut) for reward, cut in self.rewards(items)]

    def compare(self, items: Sequence[PairItem | Mapping]) -> list[PairVerdict]:
        """Bradley–Terry verdicts: p_a = sigmoid(r_a − r_b), the same in both presentation orders."""
        items = [coerce_item(i, PairItem) for i in items]
        flat = [AbsoluteItem(it.context, r, it.dimension) for it in items for r in (it.response_a, it.response_b)]
        scored = self.rewards(flat)
        return [verdict_from_rewards(r_a, r_b, max(cut_a, cut_b))
                for (r_a, cut_a), (r_b, cut_b) in zip(scored[0::2], scored[1::2])]

    def compare_cot(self, *args: Any, **kwargs: Any):
        raise ConfigError("a reward-head judge gives scores, not chain-of-thought verdicts; use a generative "
                          "judge (train_judge.judge_kind: generative) for rationales")

    # -- internals --

    def _forward(self, sequences: list[list[int]]) -> list[float]:
        """Rewards of token sequences: length-sorted, left-padded batches under inference mode."""
        import torch

        from selfrefine.models.batching import left_padded_batches

        model = self.model
        device = next(model.parameters()).device
        rewards: list[float] = [0.0] * len(sequences)
        with Progress("reward head scoring", len(sequences), "responses", min_interval=self.log_every_seconds) as progress:
            for idx, input_ids, mask in left_padded_batches(sequences, self.batch_size, self.tokenizer.pad_token_id):
                with torch.inference_mode():
                    out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device))
                for row, value in zip(idx, out.logits.float().squeeze(-1).tolist()):
                    rewards[row] = value
                progress.update(len(idx))
        return rewards
