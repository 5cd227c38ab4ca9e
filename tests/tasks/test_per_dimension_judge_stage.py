"""train_judge with judge_per_dimension: one sub-judge per dimension of the seed pairs, trained on
that dimension's pairs only, gated per dimension with keep_best, and scored through the routing
judge by every stage that loads a judge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfrefine.data import read_jsonl
from selfrefine.data.sources import DataSource
from selfrefine.errors import ConfigError, ModelLoadError
from selfrefine.flows.config import load_preset
from selfrefine.models.judge_info import JUDGE_INFO
from selfrefine.models.judge_types import PairItem
from selfrefine.models.per_dimension_judge import PerDimensionJudge
from selfrefine.models.training.reward_config import RewardRecipeConfig
from selfrefine.runtime.inputs import DATA_FILE
from selfrefine.runtime.registry import execute
from selfrefine.scoring.judge_gate import KeepBestConfig
from selfrefine.scoring.judge_settings import JudgeSettings
from selfrefine.storage.digests import digest_path
from selfrefine.storage.schema import Artifact, Metric
from selfrefine.tasks import ingest

TINY = load_preset("tiny")
DIMENSIONS = ["harmless", "helpful"]


class Stages:
    """Runs stages on one store and reads back what they wrote."""

    def __init__(self, store, artifacts):
        self.store, self.artifacts = store, artifacts
        # Demo pairs 0–23 are helpful, 24–47 harmless: 6 + 4 seed pairs, and held-out pairs of both.
        sources = {"seed_pairs_0": ("pairs", DataSource(kind="demo", skip=18, limit=10)),
                   "helpful_only": ("pairs", DataSource(kind="demo", skip=18, limit=6)),
                   "prompts_0": ("prompts", DataSource(kind="demo", limit=2)),
                   "heldout_0": ("pairs", DataSource(kind="demo", skip=12, limit=4)),
                   "heldout_1": ("pairs", DataSource(kind="demo", skip=42, limit=4))}
        config, _ = ingest.prepare(sources)
        self.data = self.run("ingest_data", config, {}, seed=None).outputs

    def run(self, stage, config, inputs, seed=1):
        return execute(stage, config, inputs, iteration_id=None, seed=seed, store=self.store, artifacts=self.artifacts)

    def artifact(self, art_id) -> Artifact:
        with self.store.session() as s:
            return s.get_one(Artifact, art_id)

    def path(self, art_id) -> Path:
        return self.artifacts.local_path(self.artifact(art_id).uri)

    def metrics(self, stage_run_id) -> list[Metric]:
        from sqlalchemy import select

        with self.store.session() as s:
            return list(s.scalars(select(Metric).where(Metric.stage_run_id == stage_run_id)))

    def heldout(self):
        return [p for role in ("heldout_0", "heldout_1")
                for p in read_jsonl(self.path(self.data[role]) / DATA_FILE, "pairs")]


def per_dimension_config(**update):
    recipe = RewardRecipeConfig(max_steps=2, per_device_batch_size=2, max_length=256, learning_rate=1e-3)
    return TINY.train_judge.model_copy(update={"judge_kind": "reward_head", "judge_per_dimension": True,
                                               "reward_recipe": recipe, **update})


@pytest.fixture(scope="module")
def stages(tmp_path_factory, model_cache) -> Stages:
    """One store for the module: a judge trained with the same config on the same pairs is reused
    by its stage key instead of trained again."""
    from selfrefine.storage.artifacts import ArtifactStore
    from selfrefine.storage.engine import Store

    home = tmp_path_factory.mktemp("per-dimension-home")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SELFREFINE_HOME", str(home))
        env.setenv("SELFREFINE_MODEL_CACHE", str(model_cache))
        env.setenv("HF_HUB_OFFLINE", "1")
        for var in ("SELFREFINE_DB_URL", "SELFREFINE_ARTIFACTS"):
            env.delenv(var, raising=False)
        store = Store(f"sqlite:///{home / 'store.db'}")
        yield Stages(store, ArtifactStore(str(home / "artifacts")))
        store.dispose()


def test_each_dimension_gets_its_own_judge_and_items_are_scored_by_their_dimensions_judge(stages):
    trained = stages.run("train_judge", per_dimension_config(), {"seed_pairs_0": stages.data["seed_pairs_0"]})
    judge_dir = stages.path(trained.outputs["judge"])
    # The sub-judge trained on the most pairs is the one that generates when the judge is the policy.
    assert json.loads((judge_dir / JUDGE_INFO).read_text()) == {
        "kind": "per_dimension", "judge_kinds": {d: "reward_head" for d in DIMENSIONS},
        "dimensions": {d: d for d in DIMENSIONS},
        "policy": "helpful"}
    meta = stages.artifact(trained.outputs["judge"]).meta
    assert {d: meta["dimensions"][d]["seed_pairs"] for d in DIMENSIONS} == {"harmless": 4, "helpful": 6}
    assert meta["seed_pairs"] == 10 and meta["per_dimension"]
    # Each sub-judge trained on its own pairs only, so their weights differ.
    assert digest_path(judge_dir / "harmless")[0] != digest_path(judge_dir / "helpful")[0]

    settings = JudgeSettings(dtype="float32")
    router = settings.load(str(judge_dir))
    assert isinstance(router, PerDimensionJudge) and router.kind == "reward_head"
    alone = {d: settings.load(str(judge_dir / d)) for d in DIMENSIONS}
    pairs = stages.heldout()
    assert {p.dimension for p in pairs} == set(DIMENSIONS)
    items = [PairItem(p.context, p.chosen, p.rejected, p.dimension) for p in pairs]
    routed = router.compare(items)
    # Batches are padded differently when scored alone: equal up to float rounding.
    assert [v.p_a for v in routed] == pytest.approx([alone[it.dimension].compare([it])[0].p_a for it in items],
                                                    abs=1e-5)
    responses = [{"context": it.context, "response": it.response_a, "dimension": it.dimension} for it in items]
    assert [s.score for s in router.score_absolute(responses)] == pytest.approx(
        [alone[r["dimension"]].score_absolute([r])[0].score for r in responses], abs=1e-5)

    # The evaluate stage scores the held-out pairs through the same routing.
    evaluated = stages.run("evaluate", TINY.evaluate.model_copy(update={"max_pairs": None}),
                           {"heldout_0": stages.data["heldout_0"], "heldout_1": stages.data["heldout_1"],
                            "judge": trained.outputs["judge"]})
    metrics = json.loads(stages.path(evaluated.outputs["metrics"]).read_text())
    assert metrics["pairwise"]["accuracy"] == pytest.approx(sum(v.p_a > 0.5 for v in routed) / len(routed))

    with pytest.raises(ConfigError, match="sub-judges for harmless, helpful, not for dimension 'honest'"):
        router.compare([PairItem(items[0].context, "a", "b", "honest")])

    # As the first iteration's policy, the judge generates with its policy sub-judge.
    generated = stages.run("generate", TINY.generate, {"prompts_0": stages.data["prompts_0"],
                                                       "policy": trained.outputs["judge"]})
    rows = [json.loads(line) for line in stages.path(generated.outputs["candidates"]).read_text().splitlines()]
    assert 0 < len(rows) <= 2 * 2 * TINY.generate.samples_per_direction  # empty samples are dropped


def test_dimensions_can_have_judges_of_different_kinds(stages):
    first = stages.run("train_judge", per_dimension_config(), {"seed_pairs_0": stages.data["seed_pairs_0"]})
    mixed = per_dimension_config(dimension_judge_kinds={"harmless": "generative"}, example_kinds=["absolute"],
                                 pair_batches=True)
    trained = stages.run("train_judge", mixed, {"seed_pairs_0": stages.data["seed_pairs_0"],
                                                "init_judge": first.outputs["judge"]}, seed=2)
    judge_dir = stages.path(trained.outputs["judge"])
    kinds = {"harmless": "generative", "helpful": "reward_head"}
    assert json.loads((judge_dir / JUDGE_INFO).read_text())["judge_kinds"] == kinds
    assert {d: json.loads((judge_dir / d / JUDGE_INFO).read_text())["kind"] for d in DIMENSIONS} == kinds
    meta = stages.artifact(trained.outputs["judge"]).meta
    # The harmless judge changed kind, so it starts from the base model; the helpful one continues.
    assert meta["dimensions"]["harmless"]["started_from"] == TINY.train_judge.base_model
    assert meta["dimensions"]["helpful"]["started_from"] == "init_judge"
    assert meta["dimensions"]["harmless"]["examples"] == 2 * 4  # the Yes and No prompt of 4 harmless pairs

    settings = JudgeSettings(dtype="float32")
    router = settings.load(str(judge_dir))
    assert router.kind == "mixed" and {d: j.kind for d, j in router.judges.items()} == kinds
    pairs = stages.heldout()
    responses = [{"context": p.context, "response": p.chosen, "dimension": p.dimension} for p in pairs]
    alone = {d: settings.load(str(judge_dir / d)) for d in DIMENSIONS}
    assert [s.score for s in router.score_absolute(responses)] == pytest.approx(
        [alone[r["dimension"]].score_absolute([r])[0].score for r in responses], abs=1e-5)

    # Absolute verdicts read both kinds' scores the same way, so evaluate scores every held-out pair.
    evaluated = stages.run("evaluate", TINY.evaluate.model_copy(update={"max_pairs": None,
                                                                        "pairwise_verdicts": "absolute"}),
                           {"heldout_0": stages.data["heldout_0"], "heldout_1": stages.data["heldout_1"],
                            "judge": trained.outputs["judge"]})
    metrics = json.loads(stages.path(evaluated.outputs["metrics"]).read_text())
    assert set(metrics["by_dimension"]) == set(DIMENSIONS) and metrics["pairwise"]["n"] == len(pairs)

    # Only the generative sub-judge writes rationales: bootstrapping sees the harmless pairs only.
    boot = stages.run("bootstrap_rationales", TINY.bootstrap_rationales.model_copy(update={"max_pairs": 10}),
                      {"pairs_0": stages.data["seed_pairs_0"], "judge": trained.outputs["judge"]})
    out = stages.path(boot.outputs["rationales"])
    assert json.loads((out / "stats.json").read_text())["pairs"] == 4
    rows = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    assert {r["dimension"] for r in rows} <= {"harmless"}


def test_keep_best_keeps_or_replaces_each_dimensions_judge_on_its_own(stages, monkeypatch):
    from selfrefine.scoring import judge_gate

    keep_best = KeepBestConfig(validation_fraction=0.25, judge=JudgeSettings(dtype="float32"))
    config = per_dimension_config(keep_best=keep_best)
    first = stages.run("train_judge", config, {"seed_pairs_0": stages.data["seed_pairs_0"]})
    first_dir = stages.path(first.outputs["judge"])
    first_meta = stages.artifact(first.outputs["judge"]).meta
    # A quarter of each dimension's seed pairs (4 harmless, 6 helpful) is held back from its training.
    assert {d: first_meta["dimensions"][d]["validation_pairs"] for d in DIMENSIONS} == {"harmless": 1, "helpful": 2}
    assert {d: first_meta["dimensions"][d]["seed_pairs"] for d in DIMENSIONS} == {"harmless": 3, "helpful": 4}

    # The previous harmless judge measures worse than any new one, the previous helpful judge better.
    def accuracy(judge_dir, pairs, *args, **kwargs):
        judge_dir = Path(judge_dir)
        previous = judge_dir.parent == first_dir  # new ones are trained in by_dimension/<dimension>/judge
        assert {p.dimension for p in pairs} == {judge_dir.name if previous else judge_dir.parent.name}
        if previous:
            return 0.5 if judge_dir.name == "harmless" else 1.0
        return 0.75

    monkeypatch.setattr(judge_gate, "validation_accuracy", accuracy)
    second = stages.run("train_judge", config, {"seed_pairs_0": stages.data["seed_pairs_0"],
                                                "init_judge": first.outputs["judge"]}, seed=2)
    second_dir = stages.path(second.outputs["judge"])
    meta = stages.artifact(second.outputs["judge"]).meta
    assert {d: meta["dimensions"][d]["kept_previous_judge"] for d in DIMENSIONS} == {"harmless": False,
                                                                                     "helpful": True}
    assert all(meta["dimensions"][d]["started_from"] == "init_judge" for d in DIMENSIONS)
    assert digest_path(second_dir / "helpful")[0] == digest_path(first_dir / "helpful")[0]
    assert digest_path(second_dir / "harmless")[0] != digest_path(first_dir / "harmless")[0]
    rows = stages.metrics(second.stage_run_id)
    kept = {m.labels.get("dimension"): m.value for m in rows if m.name == "kept_previous_judge"}
    assert kept == {"harmless": 0.0, "helpful": 1.0, None: 0.5}
    assert meta["validation_accuracy_new"] == 0.75


def test_a_dimension_without_pairs_this_time_keeps_its_previous_judge(stages):
    config = per_dimension_config()
    first = stages.run("train_judge", config, {"seed_pairs_0": stages.data["seed_pairs_0"]})
    second = stages.run("train_judge", config, {"seed_pairs_0": stages.data["helpful_only"],
                                                "init_judge": first.outputs["judge"]}, seed=2)
    first_dir, second_dir = stages.path(first.outputs["judge"]), stages.path(second.outputs["judge"])
    assert json.loads((second_dir / JUDGE_INFO).read_text())["dimensions"] == {d: d for d in DIMENSIONS}
    assert digest_path(second_dir / "harmless")[0] == digest_path(first_dir / "harmless")[0]
    assert digest_path(second_dir / "helpful")[0] != digest_path(first_dir / "helpful")[0]
    meta = stages.artifact(second.outputs["judge"]).meta
    assert meta["dimensions"]["harmless"] == {"carried_over": True}
    assert meta["dimensions"]["helpful"]["started_from"] == "init_judge" and meta["seed_pairs"] == 6


def test_evaluate_takes_over_the_scores_of_a_sub_judge_that_did_not_change(stages, caplog):
    import logging

    config = per_dimension_config()
    first = stages.run("train_judge", config, {"seed_pairs_0": stages.data["seed_pairs_0"]})
    second = stages.run("train_judge", config, {"seed_pairs_0": stages.data["helpful_only"],
                                                "init_judge": first.outputs["judge"]}, seed=2)
    heldout = {"heldout_0": stages.data["heldout_0"], "heldout_1": stages.data["heldout_1"]}
    evaluate = TINY.evaluate.model_copy(update={"max_pairs": None})
    before = stages.run("evaluate", evaluate, {**heldout, "judge": first.outputs["judge"]})
    with caplog.at_level(logging.INFO, logger="selfrefine.scoring.score_replay"):
        after = stages.run("evaluate", evaluate, {**heldout, "judge": second.outputs["judge"],
                                                  "previous_metrics": before.outputs["metrics"]})
    first_metrics, second_metrics = (json.loads(stages.path(e.outputs["metrics"]).read_text()) for e in (before, after))
    # The harmless sub-judge was carried over unchanged: its 4 pairs' scores (each response on its own,
    # and the pair) are taken over; the helpful one was trained again and scores its pairs afresh.
    assert ("harmless judge unchanged since the previous evaluation; 12 of its scores taken over, 0 scored"
            in caplog.text)
    assert "helpful judge unchanged" not in caplog.text
    records = first_metrics["item_scores"], second_metrics["item_scores"]
    assert records[1]["harmless"] == records[0]["harmless"]
    assert records[1]["helpful"]["identity"] != records[0]["helpful"]["identity"]
    assert second_metrics["by_dimension"]["harmless"] == first_metrics["by_dimension"]["harmless"]
    # The records stay in the artifact; the store's metric rows are the figures only.
    assert not any("item_scores" in m.name or len(m.name) > 80 for m in stages.metrics(after.stage_run_id))


def test_a_per_dimension_judge_with_a_missing_sub_judge_fails_the_model_check(stages, tmp_path):
    import shutil

    from selfrefine.models.loading import check_model

    trained = stages.run("train_judge", per_dimension_config(), {"seed_pairs_0": stages.data["seed_pairs_0"]})
    copy = tmp_path / "copy"
    shutil.copytree(stages.path(trained.outputs["judge"]), copy)
    assert check_model(str(copy)) == str(copy.resolve())
    for weights in (copy / "helpful").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ModelLoadError, match=r"\(helpful judge\).*no \*\.safetensors weights"):
        check_model(str(copy))
    shutil.rmtree(copy / "helpful")
    with pytest.raises(ModelLoadError, match="sub-judge of dimension 'helpful'.*missing"):
        JudgeSettings(dtype="float32").load(str(copy))
