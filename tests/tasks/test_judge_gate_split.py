"""keep_best's held-back pairs: whole prompts, chosen by content, never seen in training."""

from __future__ import annotations

import random

import pytest

from selfrefine.data import PreferencePair
from selfrefine.errors import ConfigError
from selfrefine.tasks.judge_gate import split_validation


def _pair(prompt: str, chosen: str, rejected: str) -> PreferencePair:
    return PreferencePair(context=[{"role": "user", "content": prompt}], chosen=chosen, rejected=rejected,
                          dimension="helpful", source="test")


def _several_per_prompt(n_prompts: int = 12, per_prompt: int = 5) -> list[PreferencePair]:
    # As bench/quality.py builds AlpacaEval pairs: each prompt's good answers against its bad ones,
    # so the pairs of one prompt share responses.
    return [_pair(f"prompt {i}", f"good {i}.{j % 2}", f"bad {i}.{j}")
            for i in range(n_prompts) for j in range(per_prompt)]


def test_every_pair_of_a_held_back_prompt_is_held_back_and_no_validation_response_is_trained_on():
    pairs = _several_per_prompt()
    train, validation = split_validation(pairs, 0.1)
    assert len(validation) == 10  # two whole prompts: one prompt (5 pairs) is short of 6
    assert sorted(train + validation, key=lambda p: p.id) == sorted(pairs, key=lambda p: p.id)
    train_prompts = {p.context[0]["content"] for p in train}
    train_responses = {r for p in train for r in (p.chosen, p.rejected)}
    assert not any(p.context[0]["content"] in train_prompts for p in validation)
    assert not any(r in train_responses for p in validation for r in (p.chosen, p.rejected))


def test_the_split_depends_on_content_only():
    pairs = _several_per_prompt()
    shuffled = list(pairs)
    random.Random(3).shuffle(shuffled)
    assert {p.id for p in split_validation(shuffled, 0.2)[1]} == {p.id for p in split_validation(pairs, 0.2)[1]}


def test_with_one_pair_per_prompt_the_lowest_content_ids_are_held_back():
    pairs = [_pair(f"prompt {i}", f"good {i}", f"bad {i}") for i in range(40)]
    _, validation = split_validation(pairs, 0.25)
    assert {p.id for p in validation} == set(sorted(p.id for p in pairs)[:10])


def test_pairs_that_all_share_one_prompt_leave_nothing_to_train_on():
    pairs = _several_per_prompt(n_prompts=1, per_prompt=6)
    with pytest.raises(ConfigError, match=r"holds back 6 of 6 seed pairs \(whole prompts\)"):
        split_validation(pairs, 0.1)
