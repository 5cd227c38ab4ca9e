"""The `train_judge` stage: a loadable judge, per-dimension rationales, seed-pair replay and keep-best gating.

Tests that read the shared chain (`chain`, tests/tasks/conftest.py) take one iteration's outcomes; tests
that run a stage again do so in fresh iterations of its run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from selfrefine.data import DataSource, read_jsonl
from selfrefine.runtime.inputs import DATA_FILE
from selfrefine.scoring.judge_settings import JudgeSettings
from selfrefine.tasks import ingest
from tests.tasks.conftest import assert_loadable, metric_value, weights_differ


def test_train_judge_saves_a_loadable_model_with_changed_weights(chain):
    from selfrefine.models.loading import resolve_model

    judge = chain.output("train_judge", "judge")
    assert_loadable(judge)
    assert weights_differ(judge, Path(resolve_model("tiny")))
    log = json.loads((judge / "training_log.json").read_text())
    assert log, "the training log is empty"
    meta = chain.artifact(chain.outcomes["train_judge"].outputs["judge"]).meta
    seed_items = len(read_jsonl(chain.output("ingest_data", "seed_pairs_0") / DATA_FILE, "pairs"))
    # Every pair gives two Chain-of-Hindsight texts, two absolute and two pairwise prompts.
    assert meta["seed_pairs"] == seed_items and meta["examples"] == 6 * seed_items
    assert meta["started_from"] == "tiny"
    # Trained with the pairwise prompt: read with it (evaluate's defaults), as judge.json records.
    from selfrefine.models.judge_info import judge_reading

    assert judge_reading(judge) == {"pairwise_verdicts": "prompt", "bestofn_scoring": "absolute"}
    rows = chain.metrics(chain.outcomes["train_judge"].stage_run_id)
    assert metric_value(rows, "train_examples") == meta["examples"]
    assert math.isfinite(metric_value(rows, "final_loss"))


def test_a_judge_per_dimension_reads_only_its_own_dimensions_rationales(tmp_path):
    from types import SimpleNamespace as NS

    from selfrefine.tasks.train_judge import read_rationale_examples

    rows = [{"prompt": "p1", "completion": " a", "dimension": "helpful"},
            {"prompt": "p2", "completion": " b", "dimension": "harmless"},
            {"prompt": "p3", "completion": " c"}]  # written before rows recorded their dimension
    (tmp_path / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    inputs = {"rationales": NS(path=tmp_path)}
    assert [r["prompt"] for r in read_rationale_examples(inputs, "sft", "helpful")] == ["p1", "p3"]
    assert [r["prompt"] for r in read_rationale_examples(inputs, "sft", "harmless")] == ["p2", "p3"]
    assert [r["prompt"] for r in read_rationale_examples(inputs, "sft")] == ["p1", "p2", "p3"]
    assert read_rationale_examples({}, "sft", "helpful") == []


def test_a_continued_judge_replays_a_sample_of_the_seed_pairs(chain):
    config = chain.configs["train_judge"].model_copy(update={"replay_seed_pairs": 3})
    first = chain.run("train_judge", config, chain.inputs["train_judge"], chain.new_iteration())
    # No previous judge: every seed pair trains, whatever the replay limit.
    seed_items = len(read_jsonl(chain.output("ingest_data", "seed_pairs_0") / DATA_FILE, "pairs"))
    assert chain.artifact(first.outputs["judge"]).meta["seed_pairs"] == seed_items > 3
    continued = chain.run("train_judge", config, {**chain.inputs["train_judge"],
                                                  "init_judge": chain.outcomes["train_judge"].outputs["judge"]},
                          chain.new_iteration())
    meta = chain.artifact(continued.outputs["judge"]).meta
    assert meta["seed_pairs"] == 3 and meta["started_from"] == "init_judge"


def _keep_best(**settings):
    from selfrefine.scoring.judge_gate import KeepBestConfig

    return KeepBestConfig(**{"validation_fraction": 0.25, "judge": JudgeSettings(dtype="float32"), **settings})


def test_keep_best_holds_back_the_same_seed_pairs_and_keeps_the_previous_judge_unless_beaten(chain):
    """The held-back pairs never train a judge; with a gain no accuracy can reach, the stage outputs
    the previous judge's bytes and records both validation accuracies."""
    config = chain.configs["train_judge"].model_copy(update={"keep_best": _keep_best(min_gain=0.99)})
    seed_items = len(read_jsonl(chain.output("ingest_data", "seed_pairs_0") / DATA_FILE, "pairs"))
    first = chain.run("train_judge", config, chain.inputs["train_judge"], chain.new_iteration())
    first_meta = chain.artifact(first.outputs["judge"]).meta
    held_back = round(0.25 * seed_items)
    assert first_meta["seed_pairs"] == seed_items - held_back and first_meta["validation_pairs"] == held_back > 0
    assert 0.0 <= first_meta["validation_accuracy_new"] <= 1.0
    assert first_meta["validation_accuracy_previous"] is None and not first_meta["kept_previous_judge"]

    previous = chain.outcomes["train_judge"].outputs["judge"]
    second = chain.run("train_judge", config, {**chain.inputs["train_judge"], "init_judge": previous},
                       chain.new_iteration())
    art = chain.artifact(second.outputs["judge"])
    assert art.sha256 == chain.artifact(previous).sha256
    assert art.meta["kept_previous_judge"] and art.meta["started_from"] == "init_judge"
    rows = chain.metrics(second.stage_run_id)
    assert metric_value(rows, "kept_previous_judge") == 1.0
    assert (metric_value(rows, "validation_accuracy_new"), metric_value(rows, "validation_accuracy_previous")) == (
        art.meta["validation_accuracy_new"], art.meta["validation_accuracy_previous"])
    assert_loadable(chain.path(second.outputs["judge"]))


def test_keep_best_outputs_the_new_judge_when_it_judges_the_held_back_pairs_better(chain, monkeypatch):
    from selfrefine.scoring import judge_gate

    previous = chain.outcomes["train_judge"].outputs["judge"]
    previous_path = chain.path(previous)
    # Accuracy by judge directory: the previous judge 0.5, the one trained here 0.75.
    monkeypatch.setattr(judge_gate, "validation_accuracy",
                        lambda d, *a, **k: 0.5 if Path(d) == previous_path else 0.75)
    for min_gain, kept in ((0.1, False), (0.3, True)):
        config = chain.configs["train_judge"].model_copy(update={"keep_best": _keep_best(min_gain=min_gain)})
        out = chain.run("train_judge", config, {**chain.inputs["train_judge"], "init_judge": previous},
                        chain.new_iteration())
        art = chain.artifact(out.outputs["judge"])
        assert art.meta["kept_previous_judge"] is kept
        assert (art.sha256 == chain.artifact(previous).sha256) is kept
        assert (art.meta["validation_accuracy_new"], art.meta["validation_accuracy_previous"]) == (0.75, 0.5)


def test_keep_best_with_weight_average_lets_the_averaged_judge_challenge_the_previous_one(chain, monkeypatch):
    from safetensors.torch import load_file

    from selfrefine.scoring import judge_gate

    previous = chain.outcomes["train_judge"].outputs["judge"]
    previous_path = chain.path(previous)
    seen = {}

    # The previous judge 0.5, the one trained here 0.25; the average of both 0.75 or 0.4.
    def accuracy(judge_dir, *args, **kwargs):
        judge_dir = Path(judge_dir)
        if judge_dir == previous_path:
            return 0.5
        if judge_dir.name == "averaged_judge":
            seen["averaged"] = {k: v.clone() for k, v in load_file(str(judge_dir / "model.safetensors")).items()}
            return averaged
        seen["new"] = {k: v.clone() for k, v in load_file(str(judge_dir / "model.safetensors")).items()}
        return 0.25

    monkeypatch.setattr(judge_gate, "validation_accuracy", accuracy)
    # A different min_gain each time: the same config and inputs would give the same stage key.
    for averaged, min_gain, kept in ((0.75, 0.0, False), (0.4, 0.01, True)):
        keep_best = _keep_best(weight_average=["generative"], min_gain=min_gain)
        config = chain.configs["train_judge"].model_copy(update={"keep_best": keep_best})
        out = chain.run("train_judge", config, {**chain.inputs["train_judge"], "init_judge": previous},
                        chain.new_iteration())
        art = chain.artifact(out.outputs["judge"])
        assert art.meta["kept_previous_judge"] is kept and art.meta["averaged_with_previous"]
        assert (art.meta["validation_accuracy_new"], art.meta["validation_accuracy_averaged"],
                art.meta["validation_accuracy_previous"]) == (0.25, averaged, 0.5)
        assert metric_value(chain.metrics(out.stage_run_id), "validation_accuracy_averaged") == averaged
        output = load_file(str(chain.path(out.outputs["judge"]) / "model.safetensors"))
        if kept:
            assert art.sha256 == chain.artifact(previous).sha256
            continue
        # The output is the average, the midpoint of the previous judge and the one trained here.
        old = load_file(str(previous_path / "model.safetensors"))
        assert all(torch.equal(output[k], seen["averaged"][k]) for k in output)
        for k in output:
            torch.testing.assert_close(output[k], (old[k].float() + seen["new"][k].float()).div(2).to(output[k].dtype))
        assert any(not torch.equal(output[k], old[k]) for k in output)
        assert_loadable(chain.path(out.outputs["judge"]))


def test_keep_best_with_no_seed_pair_left_to_train_on_fails_clearly(chain):
    from selfrefine.errors import ConfigError

    ingest_one, _ = ingest.prepare({"seed_pairs_0": ("pairs", DataSource(kind="demo", limit=1))})
    one_pair = chain.run("ingest_data", ingest_one, {}, chain.new_iteration()).outputs["seed_pairs_0"]
    config = chain.configs["train_judge"].model_copy(update={"keep_best": _keep_best()})
    with pytest.raises(ConfigError, match="holds back 1 of 1 seed pairs and leaves none to train on"):
        chain.run("train_judge", config, {"seed_pairs_0": one_pair}, chain.new_iteration())
