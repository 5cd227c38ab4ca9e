"""pair_batched: each pair's examples share a batch, batches hold pairs of similar length, and the
order is seeded; train_judge's settings that use it are checked when the config is built."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import ValidationError

from selfrefine.models.training.pair_batches import pair_batched
from selfrefine.tasks.train_judge import TrainJudgeConfig


def pairs(n: int, per_pair: int = 2) -> list[list[tuple[int, int, int]]]:
    """n groups of (pair, example, length) tuples; lengths spread so that sorting shows."""
    return [[(i, j, (i * 37) % 101) for j in range(per_pair)] for i in range(n)]


def length(group) -> int:
    return group[0][2]


def batches(order, batch_size):
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def test_every_full_batch_holds_whole_pairs_and_every_example_appears_once():
    groups = pairs(50) + [[("rationale", k, k)] for k in range(7)]
    order = pair_batched(groups, 8, length, seed=3)
    assert Counter(order) == Counter(e for g in groups for e in g)
    pair_batches = [b for b in batches(order, 8) if len(b) == 8 and b[0][0] != "rationale"]
    assert len(pair_batches) == 12  # 50 pairs at 4 per batch: 12 full batches and one of 2 pairs
    for batch in pair_batches:
        assert all(count == 2 for count in Counter(pair for pair, _, _ in batch).values())
    # The incomplete batches (2 pairs, 7 singletons) come last, so they cannot shift the full ones.
    assert Counter(e[0] == "rationale" for e in order[-11:]) == {True: 7, False: 4}


def test_pairs_of_similar_length_share_a_batch():
    order = pair_batched(pairs(64), 8, length, seed=0, window_batches=16)
    spread = [max(e[2] for e in b) - min(e[2] for e in b) for b in batches(order, 8)]
    shuffled = [max(e[2] for e in b) - min(e[2] for e in b) for b in batches([e for g in pairs(64) for e in g], 8)]
    assert sum(spread) < sum(shuffled) / 3


def test_the_order_is_seeded():
    groups = pairs(40)
    assert pair_batched(groups, 4, length, seed=1) == pair_batched(groups, 4, length, seed=1)
    assert pair_batched(groups, 4, length, seed=1) != pair_batched(groups, 4, length, seed=2)


def test_groups_must_fill_batches_evenly():
    with pytest.raises(ValueError, match="multiple of 4"):
        pair_batched(pairs(3, per_pair=4), 6, length)


@pytest.mark.parametrize("settings, field", [
    ({"pair_batches": True, "example_kinds": ["absolute", "pairwise"], "recipe": {"per_device_batch_size": 6}},
     "multiple of 4"),
    ({"dimension_judge_kinds": {"harmless": "generative"}}, "set judge_per_dimension: true"),
    ({"judge_per_dimension": True, "dimension_judge_kinds": {"kindness": "generative"}}, "kindness"),
    ({"judge_per_dimension": True, "judge_kind": "reward_head", "dimension_judge_kinds": {"helpful": "reward_head"},
      "rationale_training": "star_dpo"}, "rationale_training"),
])
def test_bad_judge_kind_and_batching_settings_fail_on_construction(settings, field):
    with pytest.raises(ValidationError, match=field):
        TrainJudgeConfig(**settings)


def test_a_dimension_can_have_its_own_judge_kind():
    cfg = TrainJudgeConfig(judge_per_dimension=True, judge_kind="reward_head", rationale_training="star_dpo",
                           dimension_judge_kinds={"Harmless": "generative"})
    assert cfg.kind_for("harmless") == "generative" and cfg.kind_for("helpful") == "reward_head"
    assert cfg.kind_for(None) == "reward_head"


def test_a_pair_whose_response_does_not_fit_is_trained_on_with_its_tail_cut(tiny_dir):
    from selfrefine.data import PreferencePair
    from selfrefine.models.loading import load_tokenizer
    from selfrefine.models.training.judge_examples import build_judge_examples

    tokenizer = load_tokenizer(tiny_dir)
    context = [{"role": "user", "content": "Earlier question. " * 30}, {"role": "assistant", "content": "Answer."},
               {"role": "user", "content": "How do I boil an egg?"}]
    fits = PreferencePair(context, "Simmer it for nine minutes.", "Eggs cannot be boiled.", "helpful", "test")
    too_long = PreferencePair(context, "Simmer it. " * 200, "No.", "helpful", "test")
    groups, turns_cut, truncated = build_judge_examples(
        [fits, too_long], ["absolute", "pairwise"], tokenizer=tokenizer, max_prompt_tokens=120, max_length=128)
    assert truncated == 1 and len(groups) == 2  # no pair is left out
    for group in groups:
        assert [e["completion"] for e in group] == [" Yes", " No", " A", " B"]
        assert all(len(tokenizer(e["prompt"])["input_ids"]) < 128 for e in group)  # room for the answer
    assert "Simmer it. " * 200 not in groups[1][0]["prompt"] and "Simmer it. Simmer it." in groups[1][0]["prompt"]
    assert groups[1][1]["prompt"].count("No.") >= 1  # the short response of the pair is whole
    # The short pair's four prompts each lost the oldest turn. Of the long pair's, the three with the
    # long response lost both older turns (and the question's text); the short response's lost one.
    assert turns_cut == 4 * 1 + 3 * 2 + 1
