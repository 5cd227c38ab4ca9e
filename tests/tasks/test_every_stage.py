"""Every stage through the registry and the stage runner: registered outputs, lineage, config
snapshots, and reuse or recompute when the stage runs again.

Tests that read the shared chain (`chain`, tests/tasks/conftest.py) take one iteration's outcomes; tests
that run a stage again do so in fresh iterations of its run.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from pydantic import BaseModel
from sqlalchemy import select

from selfrefine.data import read_jsonl
from selfrefine.runtime.inputs import DATA_FILE
from selfrefine.runtime.registry import get_stage
from selfrefine.runtime.stage import StageOutcome
from selfrefine.storage import repository as repo
from selfrefine.storage.schema import ArtifactEdge, EdgeKind, StageRun, StageStatus
from tests.tasks.conftest import STAGES, count_runs, forbid_running, row_counts, seed_of


EXPECTED_KINDS = {
    "ingest_data": {"seed_pairs_0": "dataset", "prompts_0": "dataset", "heldout_pairs_0": "dataset",
                    "bestofn_0": "dataset"},
    "train_judge": {"judge": "model"},
    "generate": {"candidates": "candidates"},
    "bootstrap_rationales": {"rationales": "rationales"},
    "score_filter": {"pairs": "dataset", "scores": "scores", "report": "report"},
    "policy_round": {"policy": "model"},
    "evaluate": {"metrics": "metrics"},
}


@pytest.mark.parametrize("stage", STAGES)
def test_outputs_are_registered_with_their_digests_and_kinds(chain, stage):
    outcome = chain.outcomes[stage]
    assert outcome.status == "ran"
    assert set(outcome.outputs) == set(EXPECTED_KINDS[stage])
    for role, art_id in outcome.outputs.items():
        art = chain.artifact(art_id)
        path = chain.artifacts.local_path(art.uri)
        chain.artifacts.verify(art.uri, art.sha256)  # raises if the bytes do not match
        assert (art.kind, art.name) == (EXPECTED_KINDS[stage][role], role)
        assert art.uri == f"objects/{art.sha256[:2]}/{art.sha256}"
        assert art.is_dir == path.is_dir() and art.stage_run_id == outcome.stage_run_id
        if path.is_file():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == art.sha256
            assert art.size_bytes == path.stat().st_size
        else:
            assert art.size_bytes == sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.mark.parametrize("stage", STAGES)
def test_lineage_edges_are_exactly_the_inputs_given_and_the_outputs_made(chain, stage):
    outcome = chain.outcomes[stage]
    with chain.store.session() as s:
        row = s.get_one(StageRun, outcome.stage_run_id)
        edges = s.execute(select(ArtifactEdge.kind, ArtifactEdge.role, ArtifactEdge.artifact_id)
                          .where(ArtifactEdge.stage_run_id == row.id)).all()
        assert (row.stage, row.status, row.iteration_id) == (stage, StageStatus.completed, chain.iteration_id)
        assert row.seed == seed_of(stage) and row.stage_key == outcome.stage_key
        assert row.code_version == get_stage(stage).code_version
    uses = {role: art for kind, role, art in edges if kind == EdgeKind.uses}
    makes = {role: art for kind, role, art in edges if kind == EdgeKind.makes}
    assert len(uses) + len(makes) == len(edges)  # no role appears twice
    assert uses == chain.inputs[stage]
    assert makes == outcome.outputs


def test_stage_run_config_snapshot_keeps_every_setting(chain):
    """Nothing in a stage config is a secret: the snapshot equals the config as the stage ran it,
    pinned fingerprints included (max_new_tokens and max_prompt_tokens are not redacted as if
    they were access tokens)."""
    def as_run(stage):
        return get_stage(stage).pinned(chain.configs[stage]).model_dump(mode="json")

    with chain.store.session() as s:
        stored = {stage: s.get_one(StageRun, chain.outcomes[stage].stage_run_id).config for stage in STAGES}
    assert stored == {stage: as_run(stage) for stage in STAGES}
    assert stored["train_judge"]["base_model_fingerprint"].startswith("tiny:")


@pytest.mark.parametrize("stage", STAGES)
def test_running_a_stage_again_with_the_same_inputs_reuses_it(chain, stage, monkeypatch):
    forbid_running(monkeypatch, stage)
    before = row_counts(chain.store)
    again = chain.rerun(stage)
    first = chain.outcomes[stage]
    assert again == StageOutcome(first.stage_run_id, first.stage_key, "reused", first.outputs)
    assert row_counts(chain.store) == before


def test_reuse_in_another_iteration_records_a_reused_row_with_its_inputs(chain, monkeypatch):
    forbid_running(monkeypatch, "score_filter")
    iteration = chain.new_iteration()
    again = chain.rerun("score_filter", iteration_id=iteration)
    first = chain.outcomes["score_filter"]
    assert (again.status, again.outputs, again.stage_key) == ("reused", first.outputs, first.stage_key)
    with chain.store.session() as s:
        row = s.get_one(StageRun, again.stage_run_id)
        assert (row.iteration_id, row.status, row.reused_from_id) == (iteration, StageStatus.reused,
                                                                      first.stage_run_id)
        assert {r: a.id for r, a in repo.edges_of(s, row.id, EdgeKind.uses)} == chain.inputs["score_filter"]
        assert repo.edges_of(s, row.id, EdgeKind.makes) == []  # the outputs stay the producer's
        assert {r: a.id for r, a in repo.stage_outputs(s, row).items()} == first.outputs


@pytest.mark.parametrize(("stage", "change"), [
    ("score_filter", {"judge": {"batch_size": 3}}),
    ("evaluate", {"judge": {"batch_size": 5, "device": "cpu"}}),
    ("bootstrap_rationales", {"judge": {"batch_size": 1}}),
])
def test_changing_a_speed_only_setting_reuses_the_stage(chain, stage, change, monkeypatch):
    forbid_running(monkeypatch, stage)
    config = _changed(chain.configs[stage], change)
    assert config != chain.configs[stage]
    again = chain.rerun(stage, config, iteration_id=chain.new_iteration())
    assert (again.status, again.outputs) == ("reused", chain.outcomes[stage].outputs)


def _changed(config: BaseModel, change: dict) -> BaseModel:
    """`config` with nested fields replaced, validated again."""
    def merge(base: dict, new: dict) -> dict:
        return {**base, **{k: merge(base[k], v) if isinstance(v, dict) else v for k, v in new.items()}}

    return type(config).model_validate(merge(config.model_dump(), change))


@pytest.mark.parametrize(("stage", "change"), [
    ("generate", {"temperature": 0.3}),
    ("score_filter", {"top_k": 1}),
    ("evaluate", {"n_bins": 4}),
])
def test_changing_a_setting_that_affects_the_output_recomputes_the_stage(chain, stage, change, monkeypatch):
    calls = count_runs(monkeypatch, stage)
    config = _changed(chain.configs[stage], change)
    again = chain.rerun(stage, config, iteration_id=chain.new_iteration())
    first = chain.outcomes[stage]
    assert again.status == "ran" and calls == [again.stage_run_id]
    assert again.stage_key != first.stage_key and again.stage_run_id != first.stage_run_id
    assert set(again.outputs) == set(first.outputs)
    if stage == "score_filter":
        report = json.loads(chain.path(again.outputs["report"]).read_text())
        assert report["filter"]["kept"] <= 1
        assert len(read_jsonl(chain.path(again.outputs["pairs"]) / DATA_FILE, "pairs")) <= 1
    if stage == "evaluate":
        metrics = json.loads(chain.path(again.outputs["metrics"]).read_text())
        assert len(metrics["pairwise"]["calibration"]["bins"]) == 4
