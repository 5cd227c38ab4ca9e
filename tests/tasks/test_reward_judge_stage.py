"""train_judge with judge_kind='reward_head' through the stage runner, and evaluate (and
bootstrap_rationales) using its output: the stages load the kind the judge directory names."""

from __future__ import annotations

import json

import pytest

from selfrefine.data import read_jsonl
from selfrefine.flows.config import load_preset
from selfrefine.models.judge_info import JUDGE_INFO
from selfrefine.models.judge_types import PairItem
from selfrefine.models.reward_judge import RewardHeadJudge
from selfrefine.models.training.reward_config import RewardRecipeConfig
from selfrefine.runtime.inputs import DATA_FILE, sample
from selfrefine.runtime.registry import execute
from selfrefine.scoring.metrics import expected_calibration_error
from selfrefine.tasks import ingest

TINY = load_preset("tiny")


def test_reward_head_judge_trained_by_the_stage_is_evaluated_with_its_own_probabilities(store, artifacts):
    sources = {"seed_pairs_0": ("pairs", TINY.data.seed_pairs[0]), "heldout_pairs_0": ("pairs", TINY.data.heldout_pairs[0])}
    ingest_config, _ = ingest.prepare(sources)
    data = execute("ingest_data", ingest_config, {}, iteration_id=None, seed=None, store=store,
                   artifacts=artifacts).outputs

    def path(art_id):
        return artifacts.local_path(_artifact(store, art_id).uri)

    config = TINY.train_judge.model_copy(update={"judge_kind": "reward_head", "reward_recipe": RewardRecipeConfig(
        max_steps=2, per_device_batch_size=2, max_length=256, learning_rate=1e-3)})
    trained = execute("train_judge", config, {"seed_pairs_0": data["seed_pairs_0"]}, iteration_id=None, seed=1,
                      store=store, artifacts=artifacts)
    judge_dir = path(trained.outputs["judge"])
    assert json.loads((judge_dir / JUDGE_INFO).read_text())["kind"] == "reward_head"
    assert _artifact(store, trained.outputs["judge"]).meta["judge_kind"] == "reward_head"
    # The generative kind on the same inputs is a different stage run (the kind is in the key).
    assert trained.stage_key != _key_of(TINY.train_judge, data, store, artifacts)

    evaluated = execute("evaluate", TINY.evaluate, {"heldout_0": data["heldout_pairs_0"], "judge": trained.outputs["judge"]},
                        iteration_id=None, seed=2, store=store, artifacts=artifacts)
    metrics = json.loads(path(evaluated.outputs["metrics"]).read_text())
    pairwise = metrics["pairwise"]
    assert pairwise["position_consistency"] == 1.0  # one score per response: order cannot matter

    # ECE is computed from the reward head's own probability, sigmoid(r_chosen − r_rejected).
    judge = TINY.evaluate.judge.load(str(judge_dir))
    assert isinstance(judge, RewardHeadJudge)
    pairs = sample(read_jsonl(path(data["heldout_pairs_0"]) / DATA_FILE, "pairs"), TINY.evaluate.max_pairs, 2)
    p_a = [v.p_a for v in judge.compare([PairItem(p.context, p.chosen, p.rejected, p.dimension) for p in pairs])]
    expected = expected_calibration_error(p_a + [1 - p for p in p_a], [1] * len(p_a) + [0] * len(p_a),
                                          TINY.evaluate.n_bins)
    assert pairwise["calibration"]["ece"] == pytest.approx(expected.ece, abs=1e-6)
    assert pairwise["accuracy"] == pytest.approx(sum(p > 0.5 for p in p_a) / len(p_a))

    # The rationale stage gets no chain of thought from a reward head and writes none.
    rationales = execute("bootstrap_rationales", TINY.bootstrap_rationales,
                         {"pairs_0": data["seed_pairs_0"], "judge": trained.outputs["judge"]},
                         iteration_id=None, seed=3, store=store, artifacts=artifacts)
    stats = json.loads((path(rationales.outputs["rationales"]) / "stats.json").read_text())
    assert stats["pairs"] == 0 and stats["sft_examples"] == 0


def _artifact(store, art_id):
    from selfrefine.storage.schema import Artifact

    with store.session() as s:
        return s.get_one(Artifact, art_id)


def _key_of(config, data, store, artifacts) -> str:
    from selfrefine.runtime.keys import key_for
    from selfrefine.tasks.train_judge import STAGE

    digest = _artifact(store, data["seed_pairs_0"]).sha256
    return key_for(STAGE, config, {"seed_pairs_0": digest}, 1)[0]
