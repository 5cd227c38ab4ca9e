"""The `policy_round` stage: a policy trained on the filtered pairs, or carried over when none is kept.

Tests that read the shared chain (`chain`, tests/tasks/conftest.py) take one iteration's outcomes; tests
that run a stage again do so in fresh iterations of its run.
"""

from __future__ import annotations

from selfrefine.data import read_jsonl
from selfrefine.runtime.inputs import DATA_FILE
from tests.tasks.conftest import TINY, assert_loadable, metric_value, weights_differ


def test_policy_round_writes_a_loadable_policy_trained_on_the_filtered_pairs(chain):
    policy = chain.output("policy_round", "policy")
    assert_loadable(policy)
    pairs = read_jsonl(chain.output("score_filter", "pairs") / DATA_FILE, "pairs")
    meta = chain.artifact(chain.outcomes["policy_round"].outputs["policy"]).meta
    assert meta["method"] == TINY.policy_round.method == "dpo"
    assert meta["examples"] == len(pairs)
    started_from = chain.output("train_judge", "judge")
    # With pairs the policy is trained (new weights); without, it is carried over unchanged.
    assert weights_differ(policy, started_from) == bool(pairs)
    rows = chain.metrics(chain.outcomes["policy_round"].stage_run_id)
    assert metric_value(rows, "train_examples", method="dpo") == len(pairs)


def test_an_iteration_whose_filter_keeps_no_pair_carries_the_policy_over_and_feeds_the_next_judge(chain):
    """A judge that confirms no pair (here: a margin no score can reach) is a normal outcome, not a
    failure: the empty pair set is stored, the policy is carried over unchanged, and the next
    iteration's judge trains on the seed pairs plus the (empty) self-generated ones."""
    iteration = chain.new_iteration()
    strict = TINY.score_filter.model_copy(update={"min_margin": 10.0})  # absolute scores lie in [-2, 1]
    filtered = chain.run("score_filter", strict, chain.inputs["score_filter"], iteration).outputs
    assert read_jsonl(chain.path(filtered["pairs"]) / DATA_FILE, "pairs") == []

    judge = chain.outcomes["train_judge"].outputs["judge"]
    policy_out = chain.run("policy_round", TINY.policy_round,
                           {"pairs": filtered["pairs"], "scores": filtered["scores"], "policy": judge}, iteration)
    policy = chain.path(policy_out.outputs["policy"])
    assert chain.artifact(policy_out.outputs["policy"]).meta == {"method": "dpo", "examples": 0, "unchanged": True}
    assert not weights_differ(policy, chain.path(judge))

    seed_pairs = chain.outcomes["ingest_data"].outputs["seed_pairs_0"]
    next_judge = chain.run("train_judge", TINY.train_judge,
                           {"seed_pairs_0": seed_pairs, "self_pairs": filtered["pairs"], "init_judge": judge},
                           chain.new_iteration())
    assert_loadable(chain.path(next_judge.outputs["judge"]))
