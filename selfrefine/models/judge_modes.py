"""The seed paper's judging tricks, on top of a judge's two scoring calls (`score_absolute`, `compare`).

- `demonstrations_from_pairs`: solved in-context examples (n-shot) for the absolute and pairwise
  prompts, built from labelled pairs with the same prompt formats the judge is asked in.
- `cot_verdicts`: pairwise verdicts by chain of thought with self-consistency (majority vote over k
  sampled rationales, spread over both presentation orders), as `PairVerdict`s so every pairwise
  metric (accuracy, ECE, position consistency) reads them like answer-token verdicts.
- `tournament_picks`: best-of-n by pairwise comparison (a knockout tournament, each match judged in
  both orders) instead of by absolute score.
- `verdicts_from_absolute` / `verdicts_from_scores`: pairwise verdicts from the absolute prompt alone
  (each response asked "Is the last response … ?" on its own), for a judge trained on absolute
  Yes/No examples; `yes_log_odds` orders responses by the same quantity (best-of-n).

Pure functions over a judge object; nothing here knows about stages or the store.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from selfrefine.models import prompts as P
from selfrefine.models.dimensions import get_dimension
from selfrefine.models.judge_types import AbsoluteItem, JudgeProtocol, PairItem, PairVerdict, sigmoid


def demonstrations_from_pairs(pairs: Sequence[Any], n: int, seed: int,
                              dimension_extra: Mapping[str, str] | None = None,
                              ) -> tuple[list[P.Demonstration], list[P.Demonstration]]:
    """`n` absolute and `n` pairwise demonstrations from labelled pairs (objects with `context`,
    `chosen`, `rejected`, `dimension`), drawn with `seed`.

    The answers alternate (Yes, No, Yes, …; A, B, A, …) so a 2-shot prompt shows both answers once
    and the demonstrations themselves carry no answer or position bias.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0:
        return [], []
    if not pairs:
        raise ValueError("demonstrations need labelled pairs to draw from; none were given")
    chosen = random.Random(seed).sample(list(pairs), min(n, len(pairs)))
    absolute, pairwise = [], []
    for i, pair in enumerate(chosen):
        dim = get_dimension(pair.dimension, dimension_extra)
        context = list(pair.context)
        good_first = i % 2 == 0
        response = pair.chosen if good_first else pair.rejected
        absolute.append(P.Demonstration(P.absolute_prompt(context, response, dim), P.YES if good_first else P.NO))
        a, b = (pair.chosen, pair.rejected) if good_first else (pair.rejected, pair.chosen)
        pairwise.append(P.Demonstration(P.pairwise_prompt(context, a, b, dim),
                                        P.OPTION_A if good_first else P.OPTION_B))
    return absolute, pairwise


def cot_verdicts(judge: JudgeProtocol, items: Sequence[PairItem], k: int, params: Any) -> list[PairVerdict]:
    """Chain-of-thought pairwise verdicts with self-consistency over `k` samples in both orders.

    P(response_a better) is the share of valid votes for it (0.5 without any); the per-order
    probabilities are the vote shares within each order, so `consistent` says whether both orders'
    majorities pick the same response.
    """
    if k < 2:
        raise ValueError(f"self-consistency needs k >= 2 samples (one per order at least), got {k}")
    verdicts = []
    for cot in judge.compare_cot(items, k=k, params=params, both_orders=True):
        shares = []
        for swapped in (False, True):
            votes = [s.verdict for s in cot.samples if s.swapped == swapped and s.verdict is not None]
            shares.append(sum(v == "A" for v in votes) / len(votes) if votes else 0.5)
        p_a = cot.p_a if cot.p_a is not None else 0.5
        verdicts.append(PairVerdict(verdict="A" if p_a >= 0.5 else "B", p_a=p_a, p_a_forward=shares[0],
                                    p_a_swapped=shares[1], consistent=(shares[0] >= 0.5) == (shares[1] >= 0.5)))
    return verdicts


def tournament_picks(judge: JudgeProtocol, items: Sequence[Any]) -> list[int]:
    """The candidate each best-of-n item's knockout tournament picks (index into its candidates).

    Every round pairs neighbours and keeps the winner of each match (`compare`, both orders; a tie
    keeps the earlier candidate); an odd one out goes through. The matches of one round across all
    items are judged in one batched call, so n candidates cost n − 1 comparisons per item in
    ⌈log2 n⌉ calls.
    """
    alive = [list(range(len(item.candidates))) for item in items]
    while any(len(a) > 1 for a in alive):
        matches = [(i, a[j], a[j + 1]) for i, a in enumerate(alive) for j in range(0, len(a) - 1, 2)]
        verdicts = judge.compare([PairItem(items[i].context, items[i].candidates[x].output,
                                           items[i].candidates[y].output, items[i].dimension)
                                  for i, x, y in matches])
        winners: dict[int, list[int]] = {}
        for (i, x, y), v in zip(matches, verdicts):
            winners.setdefault(i, []).append(x if v.p_a >= 0.5 else y)
        alive = [winners.get(i, []) + (a[-1:] if len(a) % 2 else []) if len(a) > 1 else a
                 for i, a in enumerate(alive)]
    return [a[0] for a in alive]


def verdicts_from_absolute(judge: JudgeProtocol, items: Sequence[PairItem]) -> list[PairVerdict]:
    """Pairwise verdicts from absolute scoring: both responses of each pair are scored on their own in
    one batched `score_absolute` call, then read by `verdicts_from_scores`."""
    scores = judge.score_absolute([AbsoluteItem(it.context, response, it.dimension)
                                   for it in items for response in (it.response_a, it.response_b)])
    return verdicts_from_scores(scores[0::2], scores[1::2])


def verdicts_from_scores(scores_a: Sequence[Any], scores_b: Sequence[Any]) -> list[PairVerdict]:
    """Pairwise verdicts from the absolute scores of each pair's two responses (index-aligned):
    P(A better) = sigmoid(z_a - z_b), where z = `yes_log_odds` (logit of P(Yes)). That is the
    Bradley–Terry reading of a Yes/No judge, the same form as a reward head's `compare`, so accuracy
    and ECE mean the same for both kinds. Neither response is shown beside the other, so there is no
    position to be biased by: both orders agree.
    """
    if len(scores_a) != len(scores_b):
        raise ValueError(f"{len(scores_a)} scores for response A, {len(scores_b)} for response B; give both per pair")
    verdicts = []
    for a, b in zip(scores_a, scores_b):
        p_a = sigmoid(yes_log_odds(a) - yes_log_odds(b))
        verdicts.append(PairVerdict(verdict="A" if p_a >= 0.5 else "B", p_a=p_a, p_a_forward=p_a,
                                    p_a_swapped=p_a, consistent=True, turns_cut=max(a.turns_cut, b.turns_cut)))
    return verdicts


def yes_log_odds(score: Any) -> float:
    """log P(Yes) - log P(No) of an `AbsoluteScore`: a score that orders responses by how sure the judge
    is that they are good. (The paper's score, +-1 + log-prob of the answer, puts every Yes above every
    No, but within the No band it ranks a confident No above a hesitant one.) For a reward head,
    whose p_yes is sigmoid(r), this is the reward r itself."""
    return _log_odds(score.p_yes)


def _log_odds(p: float, eps: float = 1e-12) -> float:
    p = min(max(p, eps), 1.0 - eps)
    return math.log(p) - math.log1p(-p)
