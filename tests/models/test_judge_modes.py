"""The judging tricks: n-shot demonstrations, chain of thought with self-consistency, pairwise best-of-n."""

from __future__ import annotations

import math

import pytest

from selfrefine.data.schema import BestOfNItem, Candidate, PreferencePair
from selfrefine.models import prompts as P
from selfrefine.models.dimensions import get_dimension
from selfrefine.models.judge import Judge
from selfrefine.models.judge_types import AbsoluteItem, PairItem, PairVerdict
from selfrefine.models.judge_modes import (cot_verdicts, demonstrations_from_pairs, tournament_picks,
                                         verdicts_from_absolute)
from tests.models.test_judge import CTX, ScriptedBackend

PAIRS = [PreferencePair(context=[{"role": "user", "content": f"Question {i}?"}], chosen=f"Good answer {i}.",
                        rejected=f"Bad answer {i}.", dimension="helpful", source="t") for i in range(6)]


def test_two_shot_shows_each_answer_once_in_the_judge_prompt_formats():
    absolute, pairwise = demonstrations_from_pairs(PAIRS, 2, seed=1)
    assert [d.answer for d in absolute] == [P.YES, P.NO]
    assert [d.answer for d in pairwise] == [P.OPTION_A, P.OPTION_B]
    dim = get_dimension("helpful")
    by_question = {p.context[0]["content"]: p for p in PAIRS}
    for demo in absolute:
        [pair] = [p for q, p in by_question.items() if q in demo.prompt]
        # Yes goes with the chosen response, No with the rejected one, in the absolute prompt format.
        response = pair.chosen if demo.answer == P.YES else pair.rejected
        assert demo.prompt == P.absolute_prompt(list(pair.context), response, dim)
    a_demo, b_demo = pairwise
    assert a_demo.prompt.index("Good answer") < a_demo.prompt.index("Bad answer")  # A = the chosen one
    assert b_demo.prompt.index("Bad answer") < b_demo.prompt.index("Good answer")
    assert a_demo.prompt.endswith("Answer:") and b_demo.prompt.endswith("Answer:")
    assert demonstrations_from_pairs(PAIRS, 2, seed=1) == (absolute, pairwise)  # seeded
    assert demonstrations_from_pairs(PAIRS, 0, seed=1) == ([], [])
    with pytest.raises(ValueError, match="labelled pairs"):
        demonstrations_from_pairs([], 2, seed=0)


def test_demonstrations_go_before_the_prompt_and_change_the_scores(tiny):
    plain = Judge(*tiny)
    absolute, pairwise = demonstrations_from_pairs(PAIRS, 2, seed=0)
    shot = Judge(*tiny, absolute_demonstrations=absolute, pairwise_demonstrations=pairwise)
    item = PairItem(CTX, "An apple.", "A car.")
    assert shot.compare([item])[0].p_a != pytest.approx(plain.compare([item])[0].p_a, abs=1e-7)
    rendered = P.with_demonstrations(P.pairwise_prompt(CTX, "An apple.", "A car.", get_dimension("helpful")), pairwise)
    assert rendered.startswith(pairwise[0].text) and rendered.endswith("Answer:")


def test_verdicts_from_absolute_are_the_bradley_terry_reading_of_p_yes(tiny):
    judge = Judge(*tiny)
    items = [PairItem(CTX, "An apple.", "A car."), PairItem(CTX, "A car.", "An apple.")]
    scores = judge.score_absolute([AbsoluteItem(CTX, r, "helpful") for r in ("An apple.", "A car.")])
    odds = [s.p_yes / (1 - s.p_yes) for s in scores]
    forward, backward = verdicts_from_absolute(judge, items)
    assert forward.p_a == pytest.approx(odds[0] / (odds[0] + odds[1]), rel=1e-6)
    assert backward.p_a == pytest.approx(1 - forward.p_a, rel=1e-6)  # swapping the responses flips it
    assert forward.verdict != backward.verdict or forward.p_a == pytest.approx(0.5)
    assert forward.p_a_forward == forward.p_a_swapped == forward.p_a and forward.consistent


def test_self_consistency_turns_votes_into_calibrated_pair_verdicts(tiny):
    # Forward samples vote A, A, B; swapped samples (mapped back) vote A, then invalid.
    backend = ScriptedBackend(["Verdict: A", "Verdict: A", "Verdict: B"], swapped=["Verdict: B", "nothing"])
    judge = Judge(*tiny, backend=backend)
    [v] = cot_verdicts(judge, [PairItem(CTX, "An apple.", "A car.")], k=5, params=None)
    assert isinstance(v, PairVerdict)
    assert v.p_a == pytest.approx(3 / 4)          # 3 of the 4 valid votes
    assert v.p_a_forward == pytest.approx(2 / 3)
    assert v.p_a_swapped == pytest.approx(1.0)    # the one valid swapped vote
    assert v.consistent and v.verdict == "A"
    with pytest.raises(ValueError, match="k >= 2"):
        cot_verdicts(judge, [], k=1, params=None)


def test_self_consistency_with_the_tiny_model(tiny):
    from selfrefine.models.generation import SamplingParams

    judge = Judge(*tiny)
    params = SamplingParams(temperature=1.0, max_new_tokens=8, seed=0)
    verdicts = cot_verdicts(judge, [PairItem(CTX, "An apple.", "A car."), PairItem(CTX, "x", "y")], k=3, params=params)
    assert len(verdicts) == 2
    assert all(0.0 <= v.p_a <= 1.0 and 0.0 <= v.p_a_forward <= 1.0 for v in verdicts)


class LengthJudge:
    """A stand-in judge that prefers the longer response; counts its batched compare calls."""

    kind = "generative"

    def __init__(self):
        self.calls: list[int] = []

    def compare(self, items):
        self.calls.append(len(items))
        return [PairVerdict(verdict="A" if len(i.response_a) >= len(i.response_b) else "B",
                            p_a=1.0 if len(i.response_a) >= len(i.response_b) else 0.0,
                            p_a_forward=1.0, p_a_swapped=1.0, consistent=True) for i in items]


def _item(lengths: list[int]) -> BestOfNItem:
    return BestOfNItem(context=CTX, candidates=[Candidate(output="x" * n, preference=1.5) for n in lengths],
                       reference=None, dimension="helpful", source="t")


@pytest.mark.parametrize("lengths", [[3, 9, 1, 4, 7, 2, 8, 5, 6, 10, 0], [5], [2, 1], [1, 7, 3]])
def test_knockout_tournament_finds_the_winner_in_n_minus_1_matches(lengths):
    judge = LengthJudge()
    items = [_item(lengths), _item([4, 1, 2])]
    picks = tournament_picks(judge, items)
    assert picks == [lengths.index(max(lengths)), 0]
    assert sum(judge.calls) == len(lengths) - 1 + 2
    assert len(judge.calls) == math.ceil(math.log2(max(len(lengths), 3)))  # one batched call per round
