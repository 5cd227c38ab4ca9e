"""PerDimensionJudge on tiny generative sub-judges: per-item arguments and demonstrations reach the
right sub-judge (the routing of scores is checked on trained sub-judges in
tests/tasks/test_per_dimension_judge_stage.py)."""

from __future__ import annotations

import pytest

from selfrefine.errors import ModelLoadError
from selfrefine.models import prompts as P
from selfrefine.models.generation.base import SamplingParams
from selfrefine.models.judge import Judge
from selfrefine.models.judge_info import sub_judge_dirs
from selfrefine.models.judge_types import PairItem
from selfrefine.models.per_dimension_judge import PerDimensionJudge


def _items() -> list[PairItem]:
    ctx = [{"role": "user", "content": "How do I keep my bike chain from rusting?"}]
    return [PairItem(ctx, f"Oil it every {n} weeks.", "Bikes are fun.", dim)
            for n, dim in ((1, "helpful"), (2, "harmless"), (3, "helpful"), (4, "harmless"))]


def test_hints_for_chain_of_thought_go_with_their_items(tiny):
    judges = {"helpful": Judge(*tiny, batch_size=4), "harmless": Judge(*tiny, batch_size=4)}
    router = PerDimensionJudge(judges)
    items, hints = _items(), ["A", "B", None, "A"]
    params = SamplingParams(temperature=0.0, max_new_tokens=6, seed=0)
    routed = router.compare_cot(items, k=1, params=params, hints=hints)
    alone = [judges[it.dimension].compare_cot([it], k=1, params=params, hints=[h])[0] for it, h in zip(items, hints)]
    assert [[s.text for s in v.samples] for v in routed] == [[s.text for s in v.samples] for v in alone]
    # Without hints the prompts differ from the hinted ones, so the hints above did reach them.
    plain = router.compare_cot(items, k=1, params=params)
    assert [[s.text for s in v.samples] for v in plain] != [[s.text for s in v.samples] for v in routed]


def test_demonstrations_set_on_the_router_reach_every_sub_judge(tiny):
    judges = {"helpful": Judge(*tiny), "harmless": Judge(*tiny)}
    router = PerDimensionJudge(judges)
    demo = (P.Demonstration("Is it helpful?", P.YES),)
    router.absolute_demonstrations = demo
    router.pairwise_demonstrations = demo
    assert router.absolute_demonstrations == router.pairwise_demonstrations == demo
    assert all(j.absolute_demonstrations == j.pairwise_demonstrations == demo for j in judges.values())


@pytest.mark.parametrize("sub", ["../elsewhere", "/abs/path", "missing"])
def test_a_sub_judge_outside_the_judge_directory_or_missing_is_refused(tmp_path, sub):
    (tmp_path / "elsewhere").mkdir()
    root = tmp_path / "judge"
    root.mkdir()
    with pytest.raises(ModelLoadError, match="sub-judge of dimension 'helpful'"):
        sub_judge_dirs(root, {"kind": "per_dimension", "dimensions": {"helpful": sub}})
    with pytest.raises(ModelLoadError, match="without a 'dimensions' mapping"):
        sub_judge_dirs(root, {"kind": "per_dimension"})
