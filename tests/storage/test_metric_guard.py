"""A non-finite metric never reaches the store: the stage completes, its finite metrics are stored
and each NaN or infinite value (or label) is left out with a warning, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging

from pydantic import BaseModel

from selfrefine.runtime.runner import run_stage
from selfrefine.runtime.stage import Output, Stage, StageReturn
from selfrefine.storage import repository as repo
from selfrefine.storage.schema import StageRun, StageStatus


class NoConfig(BaseModel):
    pass


def measure_badly(ctx) -> StageReturn:
    out = ctx.out_dir / "data.txt"
    out.write_text("x")
    return StageReturn({"data": Output(out, "dataset")}, [
        ("accuracy", 0.75, {"source": "hh"}),
        ("accuracy", float("nan"), {"source": "empty"}),  # a mean over no items
        ("ece", float("inf"), {}),
        ("ece", float("-inf"), {"bin": 1}),
        ("count", 3, {"weight": float("nan")}),
    ])


def test_non_finite_metrics_are_left_out_with_a_warning(store, iteration, caplog):
    with caplog.at_level(logging.WARNING, logger="selfrefine.storage.repository"):
        outcome = run_stage(Stage("measure", "1", NoConfig, measure_badly), NoConfig(), {},
                            iteration_id=iteration.id, store=store)
    with store.session() as s:
        assert s.get_one(StageRun, outcome.stage_run_id).status == StageStatus.completed
        stored = {(m.name, m.value, tuple(sorted(m.labels.items())))
                  for m in repo.metrics_of(s, outcome.stage_run_id) if m.name != "stage_function_seconds"}
    assert stored == {("accuracy", 0.75, (("source", "hh"),))}
    warnings = [r.getMessage() for r in caplog.records if "not stored" in r.getMessage()]
    assert len(warnings) == 4
    assert any("accuracy" in w and "value is nan" in w for w in warnings)
    assert any("count" in w and "label 'weight' is nan" in w for w in warnings)
