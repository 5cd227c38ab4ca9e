"""The judge interface: every judge class follows `JudgeProtocol`, and items arrive in any shape."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from selfrefine.errors import DataError
from selfrefine.models.judge import Judge
from selfrefine.models.judge_kind import load_judge
from selfrefine.models.judge_types import AbsoluteItem, JudgeProtocol, PairItem, coerce_item, sigmoid
from selfrefine.models.per_dimension_judge import PerDimensionJudge
from selfrefine.models.reward_judge import RewardHeadJudge
from selfrefine.models.sequence_classifier_judge import SequenceClassifierJudge


@pytest.mark.parametrize("cls", [Judge, RewardHeadJudge, SequenceClassifierJudge, PerDimensionJudge])
def test_every_judge_class_offers_the_protocol_methods(cls):
    for name in ("score_absolute", "compare", "compare_cot"):
        assert callable(getattr(cls, name, None)), f"{cls.__name__} lacks {name}"


def test_a_loaded_judge_and_a_per_dimension_judge_satisfy_the_protocol(tiny_dir):
    judge = load_judge(tiny_dir, dtype="float32", device="cpu")
    assert isinstance(judge, JudgeProtocol) and judge.kind == "generative"
    routed = PerDimensionJudge({"helpful": judge})
    assert isinstance(routed, JudgeProtocol) and routed.kind == "generative"
    assert not isinstance(object(), JudgeProtocol)


def test_coerce_item_takes_the_dataclass_a_mapping_or_an_object():
    item = PairItem([{"role": "user", "content": "hi"}], "a", "b", "harmless")
    assert coerce_item(item, PairItem) is item
    assert coerce_item({"context": item.context, "response_a": "a", "response_b": "b", "dimension": "harmless",
                        "extra": 1}, PairItem) == item
    # A None field takes the dataclass default, as a missing one does.
    assert coerce_item(SimpleNamespace(context=[], response="r", dimension=None), AbsoluteItem) == \
        AbsoluteItem([], "r", "helpful")
    with pytest.raises(DataError, match="PairItem needs response_b") as caught:
        coerce_item({"context": [], "response_a": "a"}, PairItem)
    assert caught.value.field == "response_b"


def test_sigmoid_is_stable_at_both_ends():
    assert sigmoid(0.0) == 0.5
    assert sigmoid(1000.0) == 1.0 and sigmoid(-1000.0) == 0.0
    assert sigmoid(2.0) + sigmoid(-2.0) == pytest.approx(1.0)
