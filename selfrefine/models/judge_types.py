"""The judge interface: what a judge is asked (items), what it answers (scores, verdicts), and the
protocol every judge class follows.

Every judge class (`judge.Judge`, the decoder judge; `reward_judge.RewardHeadJudge`;
`sequence_classifier_judge.SequenceClassifierJudge`; `per_dimension_judge.PerDimensionJudge`) takes
and returns these types, so a stage scores with whichever judge `judge_kind.load_judge` loaded
without knowing its class. The field meanings of the answers are defined by the decoder judge (see
`judge`); the reward judges fill the same fields from a scalar reward (see `reward_judge`).

This module imports nothing heavier than the standard library: the types travel into stages,
metrics and score records that never load a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from selfrefine.errors import DataError

Turns = list[dict[str, str]]


# --- what a judge is asked ----------------------------------------------------------------------

@dataclass(frozen=True)
class AbsoluteItem:
    """A response to score on its own: `context` turns, the `response`, the dimension name."""

    context: Turns
    response: str
    dimension: str = "helpful"


@dataclass(frozen=True)
class PairItem:
    """Two responses to the same context to compare on a dimension."""

    context: Turns
    response_a: str
    response_b: str
    dimension: str = "helpful"


# --- what a judge answers -----------------------------------------------------------------------

@dataclass(frozen=True)
class AbsoluteScore:
    answer: Literal["Yes", "No"]
    score: float          # +1 + logprob (Yes) or -1 + logprob (No)
    logprob: float        # log-prob of the answer in the judge's `logprob_space`
    p_yes: float          # softmax over the Yes/No logits (calibration output)
    vocab_logprob: float  # full-vocabulary log-prob of the answer (min over its tokens)
    turns_cut: int = 0    # oldest context turns dropped to fit max_length


@dataclass(frozen=True)
class PairVerdict:
    verdict: Literal["A", "B"]  # the better response in the item's own order (from p_a)
    p_a: float                  # P(response_a is better), mean of both orders
    p_a_forward: float          # P(" A") with response_a shown as OPTION A
    p_a_swapped: float          # P(" B") with response_a shown as OPTION B
    consistent: bool            # both orders pick the same response
    turns_cut: int = 0


@dataclass(frozen=True)
class CotSample:
    text: str
    verdict: Literal["A", "B"] | None  # in the item's own order (mapped back when swapped)
    swapped: bool


@dataclass(frozen=True)
class CotVerdict:
    verdict: Literal["A", "B"] | None  # majority; None when tied or no sample gave a verdict
    votes_a: int
    votes_b: int
    invalid: int                       # samples without a parsable "Verdict: A|B" line
    samples: tuple[CotSample, ...] = field(default=())

    @property
    def p_a(self) -> float | None:
        """Share of valid votes for A (None without valid votes)."""
        total = self.votes_a + self.votes_b
        return self.votes_a / total if total else None


# --- the protocol -------------------------------------------------------------------------------

@runtime_checkable
class JudgeProtocol(Protocol):
    """What every judge class offers. `kind` names the class of judging ("generative" answers with
    tokens and can reason in text; "reward_head" and "sequence_classifier" give a scalar reward; a
    per-dimension judge reports its sub-judges' common kind, or "mixed"). A judge that cannot
    reason in text raises `ConfigError` from `compare_cot`. `truncated` counts, over the judge's
    lifetime, the inputs it read cut short because they would not fit its `max_length` even without
    context (a response without its tail; a sequence classifier's conversation without its start)."""

    kind: str
    truncated: int

    def score_absolute(self, items: Sequence[AbsoluteItem | Mapping]) -> list[AbsoluteScore]:
        """One absolute score per item, in input order."""
        ...

    def compare(self, items: Sequence[PairItem | Mapping]) -> list[PairVerdict]:
        """One pairwise verdict per item, in input order, from both presentation orders."""
        ...

    def compare_cot(self, items: Sequence[PairItem | Mapping], *args: Any, **kwargs: Any) -> list[CotVerdict]:
        """Chain-of-thought verdicts by majority vote over sampled rationales (see `judge.Judge`)."""
        ...


# --- helpers every judge uses -------------------------------------------------------------------

def truncation_metrics(judge: Any, before: int = 0) -> list[tuple[str, float, dict]]:
    """The stage metric `responses_truncated`: the inputs `judge` read cut short since it counted
    `before` (none for an object that does not count them)."""
    count = getattr(judge, "truncated", None)
    return [("responses_truncated", float(count - before), {})] if isinstance(count, int) else []


Item = TypeVar("Item", AbsoluteItem, PairItem)


def coerce_item(item: Any, cls: type[Item]) -> Item:
    """Accept the item dataclass itself, a mapping or any object with the same field names."""
    if isinstance(item, cls):
        return item
    get = item.get if isinstance(item, Mapping) else lambda k, d=None: getattr(item, k, d)
    values = {k: get(k) for k in cls.__dataclass_fields__ if get(k) is not None}
    missing = [k for k in ("context", "response", "response_a", "response_b")
               if k in cls.__dataclass_fields__ and k not in values]
    if missing:
        raise DataError(f"{cls.__name__} needs {', '.join(missing)}; got {type(item).__name__} "
                        f"with {sorted(item) if isinstance(item, Mapping) else 'other attributes'}",
                        field=missing[0])
    return cls(**values)


def sigmoid(x: float) -> float:
    """Logistic function, numerically stable for large |x|: the Bradley–Terry probability of a
    reward or log-odds difference, shared by the reward judges and the judging tricks."""
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
