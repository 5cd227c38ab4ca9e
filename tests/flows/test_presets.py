"""The shipped presets: each validates as a RunConfig, and each says what it is for."""

from __future__ import annotations

import pytest

from selfrefine.errors import ConfigError
from selfrefine.flows.config import GPU_STAGES, load_preset, parse_config, preset_names


def test_the_documented_presets_are_shipped():
    assert {"tiny", "cpu", "gpu", "quality"} <= set(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_validates_and_runs_on_the_shipped_demo_data(name):
    cfg = load_preset(name)
    assert cfg.name
    sources = [s for field in ("seed_pairs", "prompts", "heldout_pairs", "bestofn") for s in getattr(cfg.data, field)]
    assert sources and all(s.kind == "demo" for s in sources)  # runnable anywhere, without the hub


def test_the_gpu_preset_sends_the_model_stages_to_the_gpu_pool():
    cfg = load_preset("gpu")
    assert {stage: cfg.placement_of(stage) for stage in GPU_STAGES} == {stage: "gpu" for stage in GPU_STAGES}
    assert cfg.generate.backend.backend == "vllm" and cfg.train_judge.recipe.deepspeed is not None


def test_the_quality_preset_gives_each_dimension_its_judge_kind_trains_cheaply_and_replays_seed_pairs():
    cfg = load_preset("quality")
    judge = cfg.train_judge
    assert judge.judge_per_dimension and (judge.kind_for("harmless"), judge.kind_for("helpful")) == (
        "generative", "reward_head")
    assert judge.pair_batches and judge.recipe.train_last_layers and judge.replay_seed_pairs
    recipe = judge.reward_recipe
    assert recipe.train_last_layers and recipe.group_by_length
    # Both kinds are read by their absolute scores, the one reading they share.
    assert cfg.evaluate.pairwise_verdicts == cfg.score_filter.pairwise_verdicts == "absolute"
    assert judge.keep_best.pairwise_verdicts == "absolute" and cfg.evaluate.bestofn_scoring == "yes_log_odds"


def test_generative_judge_tricks_with_a_reward_head_are_refused_before_anything_runs():
    raw = load_preset("quality").model_dump(mode="json")
    raw["evaluate"]["demonstrations"] = 2
    with pytest.raises(ConfigError, match="fields together: .*generative judge"):
        parse_config(raw)
    raw["train_judge"]["judge_kind"] = "generative"
    assert parse_config(raw).evaluate.demonstrations == 2
    raw["train_judge"]["dimension_judge_kinds"] = {"helpful": "reward_head"}
    with pytest.raises(ConfigError, match="dimension_judge_kinds"):
        parse_config(raw)


def _demo_data() -> dict:
    return {"seed_pairs": [{"kind": "demo"}], "prompts": [{"kind": "demo"}], "heldout_pairs": [{"kind": "demo"}]}


@pytest.mark.parametrize("kinds, pairwise, bestofn, ranking", [
    (["hindsight", "absolute", "pairwise"], "prompt", "absolute", "absolute"),
    (["hindsight", "absolute"], "absolute", "yes_log_odds", "yes_log_odds"),
])
def test_the_stages_read_the_judge_the_way_it_is_trained_unless_the_config_says_otherwise(
        kinds, pairwise, bestofn, ranking):
    cfg = parse_config({"data": _demo_data(), "train_judge": {"example_kinds": kinds, "keep_best": {}}})
    assert (cfg.evaluate.pairwise_verdicts, cfg.evaluate.bestofn_scoring) == (pairwise, bestofn)
    assert (cfg.score_filter.pairwise_verdicts, cfg.score_filter.ranking) == (pairwise, ranking)
    assert cfg.train_judge.keep_best.pairwise_verdicts == pairwise
    # The same reading the judge records in its judge.json when it is trained.
    from selfrefine.models.judge_info import trained_reading
    assert trained_reading(kinds) == {"pairwise_verdicts": pairwise, "bestofn_scoring": bestofn}

    # A setting the config makes is kept, and survives the snapshot a resume rebuilds the run from.
    told = parse_config({"data": _demo_data(), "train_judge": {"example_kinds": kinds},
                         "evaluate": {"bestofn_scoring": "pairwise"}, "score_filter": {"ranking": "absolute"}})
    assert told.evaluate.bestofn_scoring == "pairwise" and told.score_filter.ranking == "absolute"
    assert told.evaluate.pairwise_verdicts == pairwise
    assert parse_config(told.model_dump(mode="json")) == told


def test_chain_of_thought_keeps_the_pairwise_prompt_of_a_judge_trained_without_it():
    cfg = parse_config({"data": _demo_data(), "train_judge": {"example_kinds": ["absolute"]},
                        "evaluate": {"chain_of_thought": {"samples": 3}}})
    assert cfg.evaluate.pairwise_verdicts == "prompt" and cfg.evaluate.bestofn_scoring == "yes_log_odds"
