"""The list of stages and the one function that computes a stage key."""

from __future__ import annotations

import uuid

import pytest
from pydantic import BaseModel

from selfrefine.errors import ConfigError
from selfrefine.flows.config import GPU_STAGES, STAGES, config_sections
from selfrefine.flows.dispatch import idempotency_key
from selfrefine.runtime import registry
from selfrefine.runtime.keys import key_for
from selfrefine.runtime.runner import run_stage
from selfrefine.runtime.stage import Output, Stage, StageReturn
from selfrefine.storage import repository as repo
from selfrefine.storage.engine import Store
from selfrefine.storage.schema import StageRun


class ModelConfig(BaseModel):
    model: str = "a"
    fingerprint: str | None = None


def _pin(config: ModelConfig) -> ModelConfig:
    return config.model_copy(update={"fingerprint": f"fp-of-{config.model}"})


def _write(ctx) -> StageReturn:
    out = ctx.out_dir / "out.txt"
    out.write_text(ctx.config.model_dump_json())
    return StageReturn({"out": Output(out, "dataset")})


PINNED = Stage(name="pinned", code_version="1", config=ModelConfig, run=_write, pin=_pin)


def test_every_stage_is_listed_once_with_the_order_of_a_run():
    names = registry.stage_names()
    assert len(names) == len(set(names))
    assert names[0] == "ingest_data" and names[-1] == "report"
    assert STAGES == ("train_judge", "generate", "bootstrap_rationales", "score_filter", "policy_round",
                      "evaluate", "base_responses", "policy_responses", "evaluate_evaluator", "evaluate_policy")
    assert set(GPU_STAGES) < set(STAGES)
    assert set(config_sections()) <= set(STAGES)
    assert all(registry.get_stage(name).name == name for name in names)
    with pytest.raises(ConfigError, match="unknown stage 'nope'"):
        registry.get_stage("nope")


def test_key_for_pins_the_config_and_hashes_the_code_version():
    key, pinned = key_for(PINNED, ModelConfig(), {"data": "0" * 64}, 1)
    assert pinned.fingerprint == "fp-of-a"
    # A config that arrives pinned with a stale fingerprint is pinned again: same key.
    assert key_for(PINNED, ModelConfig(fingerprint="stale"), {"data": "0" * 64}, 1)[0] == key
    unpinned = Stage(name="pinned", code_version="1", config=ModelConfig, run=_write)
    assert key_for(unpinned, ModelConfig(), {"data": "0" * 64}, 1)[0] != key
    bumped = Stage(name="pinned", code_version="2", config=ModelConfig, run=_write, pin=_pin)
    assert key_for(bumped, ModelConfig(), {"data": "0" * 64}, 1)[0] != key


def test_the_runner_and_the_dispatch_key_agree_for_a_pinned_stage(selfrefine_home, monkeypatch):
    store = Store(f"sqlite:///{selfrefine_home / 'store.db'}")
    with store.session() as s:
        run = repo.create_run(s, name="keys", n_iterations=1, config={}, config_digest="-")
        iteration = repo.get_or_create_iteration(s, run.id, 1)
    monkeypatch.setattr(registry, "STAGES", (*registry.STAGES, PINNED))
    outcome = run_stage(PINNED, ModelConfig(), {}, iteration_id=iteration.id, seed=3, store=store)
    with store.session() as s:
        assert s.get_one(StageRun, outcome.stage_run_id).config["fingerprint"] == "fp-of-a"
    dispatched = idempotency_key(store, "pinned", ModelConfig(), {}, iteration.id, 3,
                                 flow_run_state=lambda key: None)
    assert dispatched.split(":")[2] == outcome.stage_key
    assert uuid.UUID(dispatched.split(":")[0]) == iteration.id
    store.dispose()
