"""Fixtures for the stage tests: a SQLite store and artifact store per test, fixture data files,
row counts to show that bad input leaves the store untouched, and `chain`: one iteration of every
loop stage on the tiny model (ingest → train_judge → generate → bootstrap_rationales → score_filter
→ policy_round → evaluate, tiny preset settings), run once per session and shared by the tests that
read its outcomes. Tests that run a stage again do so in fresh iterations of the chain's run, so they
never change the rows the other tests inspect.
"""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from pydantic import BaseModel
from sqlalchemy import func, select

from selfrefine.flows.config import load_preset
from selfrefine.runtime import registry
from selfrefine.runtime.registry import execute, stage_names
from selfrefine.runtime.stage import StageOutcome
from selfrefine.storage import repository as repo
from selfrefine.storage.artifacts import ArtifactStore
from selfrefine.storage.engine import Store
from selfrefine.storage.schema import Artifact, ArtifactEdge, Iteration, Metric, Run, StageRun
from selfrefine.tasks import ingest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Every table a stage or a run writes to.
STORE_TABLES = (Run, Iteration, StageRun, Artifact, ArtifactEdge, Metric)


def row_counts(store: Store) -> dict[str, int]:
    """Rows per table of the store, by table name."""
    with store.session() as s:
        return {t.__tablename__: s.scalar(select(func.count()).select_from(t)) for t in STORE_TABLES}


def stored_paths(artifacts: ArtifactStore) -> list[str]:
    """Every object and staging entry under a local artifact root."""
    return sorted(artifacts.stored_keys()) + artifacts.staging_paths()


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def store(selfrefine_home) -> Store:
    """A fresh SQLite store in this test's SELFREFINE_HOME."""
    s = Store(f"sqlite:///{selfrefine_home / 'store.db'}")
    yield s
    s.dispose()


@pytest.fixture
def artifacts(selfrefine_home) -> ArtifactStore:
    return ArtifactStore(str(selfrefine_home / "artifacts"))
TINY = load_preset("tiny")


# The stages the chain runs, in a run's order: ingest_data and the loop's six (runtime/registry.py).
STAGES = tuple(stage_names()[:7])
DEMO = Path(__file__).resolve().parents[2] / "selfrefine" / "data" / "demo"


def seed_of(stage: str) -> int | None:
    """A distinct seed per stage (ingest takes none, like in the flow)."""
    return None if stage == "ingest_data" else 1000 + STAGES.index(stage)


@dataclass
class Chain:
    """One iteration's stages and what each was given and returned."""

    store: Store
    artifacts: ArtifactStore
    run_id: uuid.UUID
    iteration_id: uuid.UUID
    configs: dict[str, BaseModel] = field(default_factory=dict)
    inputs: dict[str, dict[str, uuid.UUID]] = field(default_factory=dict)
    outcomes: dict[str, StageOutcome] = field(default_factory=dict)
    _next_index: itertools.count = field(default_factory=lambda: itertools.count(2))

    def run(self, stage: str, config: BaseModel, inputs: dict[str, uuid.UUID],
            iteration_id: uuid.UUID | None = None) -> StageOutcome:
        return execute(stage, config, inputs, iteration_id=iteration_id or self.iteration_id,
                       seed=seed_of(stage), store=self.store, artifacts=self.artifacts)

    def rerun(self, stage: str, config: BaseModel | None = None,
              iteration_id: uuid.UUID | None = None) -> StageOutcome:
        """Run `stage` again with its chain inputs (and its chain config unless one is given)."""
        return self.run(stage, config or self.configs[stage], self.inputs[stage], iteration_id)

    def new_iteration(self) -> uuid.UUID:
        with self.store.session() as s:
            return repo.get_or_create_iteration(s, self.run_id, next(self._next_index)).id

    def artifact(self, art_id: uuid.UUID) -> Artifact:
        with self.store.session() as s:
            return s.get_one(Artifact, art_id)

    def path(self, art_id: uuid.UUID) -> Path:
        return self.artifacts.local_path(self.artifact(art_id).uri)

    def output(self, stage: str, role: str) -> Path:
        return self.path(self.outcomes[stage].outputs[role])

    def metrics(self, stage_run_id: uuid.UUID) -> list[Metric]:
        with self.store.session() as s:
            return list(s.scalars(select(Metric).where(Metric.stage_run_id == stage_run_id)))


@pytest.fixture(scope="session")
def chain(tmp_path_factory, model_cache) -> Chain:
    """The whole chain once, on the tiny model with the demo data and the tiny preset's settings."""
    home = tmp_path_factory.mktemp("chain-home")
    with pytest.MonkeyPatch.context() as env:
        # The autouse per-test home is function-scoped: give this session-scoped store its own.
        env.setenv("SELFREFINE_HOME", str(home))
        env.setenv("SELFREFINE_MODEL_CACHE", str(model_cache))
        env.setenv("HF_HUB_OFFLINE", "1")
        env.setenv("TRANSFORMERS_OFFLINE", "1")
        for var in ("SELFREFINE_DB_URL", "SELFREFINE_ARTIFACTS"):
            env.delenv(var, raising=False)
        store = Store(f"sqlite:///{home / 'store.db'}")
        with store.session() as s:
            run = repo.create_run(s, name="stage-tests", n_iterations=1, config={}, config_digest="-")
            iteration = repo.get_or_create_iteration(s, run.id, 1)
        c = Chain(store, ArtifactStore(str(home / "artifacts")), run.id, iteration.id)
        run_chain(c)
    yield c
    store.dispose()


def run_chain(c: Chain) -> None:
    sources = {}
    for field_name, kind in (("seed_pairs", "pairs"), ("prompts", "prompts"),
                             ("heldout_pairs", "pairs"), ("bestofn", "bestofn")):
        for i, source in enumerate(getattr(TINY.data, field_name)):
            sources[f"{field_name}_{i}"] = (kind, source)
    ingest_config, _ = ingest.prepare(sources)

    def step(stage, config, inputs):
        c.configs[stage], c.inputs[stage] = config, dict(inputs)
        c.outcomes[stage] = c.run(stage, config, inputs)
        return c.outcomes[stage].outputs

    data = step("ingest_data", ingest_config, {})
    judge = step("train_judge", TINY.train_judge, {"seed_pairs_0": data["seed_pairs_0"]})["judge"]
    candidates = step("generate", TINY.generate,
                      {"prompts_0": data["prompts_0"], "policy": judge})["candidates"]
    step("bootstrap_rationales", TINY.bootstrap_rationales,
         {"pairs_0": data["seed_pairs_0"], "judge": judge})
    filtered = step("score_filter", TINY.score_filter, {"candidates": candidates, "judge": judge})
    step("policy_round", TINY.policy_round,
         {"pairs": filtered["pairs"], "scores": filtered["scores"], "policy": judge})
    step("evaluate", TINY.evaluate,
         {"heldout_0": data["heldout_pairs_0"], "bestofn_0": data["bestofn_0"], "judge": judge})


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def metric_value(rows: list[Metric], name: str, **labels) -> float:
    found = [m.value for m in rows if m.name == name and m.labels == labels]
    assert len(found) == 1, f"expected one metric row {name} {labels}, got {len(found)}"
    return found[0]


def state_dict(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    tensors = {}
    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        tensors.update(load_file(shard))
    assert tensors, f"no safetensors weights in {model_dir}"
    return tensors


def weights_differ(a: Path, b: Path) -> bool:
    import torch

    sa, sb = state_dict(a), state_dict(b)
    assert sa.keys() == sb.keys()
    return any(not torch.equal(sa[k], sb[k]) for k in sa)


def assert_loadable(model_dir: Path) -> None:
    import torch

    from selfrefine.models.loading import load_model

    model, tokenizer = load_model(str(model_dir), dtype="float32", device="cpu")
    batch = tokenizer(["Human: hello\n\nAssistant:"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all()


def win(preference: float) -> float:
    return preference - 1.0


def bestofn_bounds(items) -> tuple[float, float, float]:
    """(worst pick, random pick, best pick) win rates of best-of-n items, from their preferences."""
    worst = sum(min(win(c.preference) for c in it.candidates) for it in items) / len(items)
    rand = sum(sum(win(c.preference) for c in it.candidates) / len(it.candidates) for it in items) / len(items)
    best = sum(max(win(c.preference) for c in it.candidates) for it in items) / len(items)
    return worst, rand, best


def fraction(value) -> bool:
    return isinstance(value, (int, float)) and 0.0 <= value <= 1.0


def replace_run(monkeypatch, stage: str, fn) -> None:
    """Make the registry's `stage` call `fn` instead of its own function (undone after the test)."""
    stages = tuple(replace(s, run=fn) if s.name == stage else s for s in registry.STAGES)
    monkeypatch.setattr(registry, "STAGES", stages)


def forbid_running(monkeypatch, stage: str) -> None:
    def must_not_run(ctx):
        raise AssertionError(f"stage {stage} ran although an identical stage run is stored")

    replace_run(monkeypatch, stage, must_not_run)


def count_runs(monkeypatch, stage: str) -> list:
    """Record each call of the stage function (which still runs)."""
    calls, original = [], registry.get_stage(stage).run

    def counted(ctx):
        calls.append(ctx.stage_run_id)
        return original(ctx)

    replace_run(monkeypatch, stage, counted)
    return calls
