"""The `generate` stage: controllable candidates for both directions of every prompt.

Tests that read the shared chain (`chain`, tests/tasks/conftest.py) take one iteration's outcomes; tests
that run a stage again do so in fresh iterations of its run.
"""

from __future__ import annotations

from collections import defaultdict

from selfrefine.data import read_jsonl
from selfrefine.runtime.inputs import DATA_FILE
from tests.tasks.conftest import TINY, metric_value, read_rows


def test_generate_writes_candidates_for_both_directions_of_every_prompt(chain):
    cfg = TINY.generate
    prompts = read_jsonl(chain.output("ingest_data", "prompts_0") / DATA_FILE, "prompts")
    rows = read_rows(chain.output("generate", "candidates"))
    by_request = defaultdict(list)
    for row in rows:
        assert row["text"].strip() and row["direction"] in ("more", "less")
        by_request[row["prompt_id"], row["direction"]].append(row["sample"])
    assert {p for p, _ in by_request} == {p.id for p in prompts}
    assert set(by_request) == {(p.id, d) for p in prompts for d in ("more", "less")}
    for samples in by_request.values():
        assert len(set(samples)) == len(samples) and all(0 <= i < cfg.samples_per_direction for i in samples)
    context = {p.id: p.context for p in prompts}
    assert all(row["context"] == context[row["prompt_id"]] for row in rows)
    metrics = chain.metrics(chain.outcomes["generate"].stage_run_id)
    assert metric_value(metrics, "candidates") == len(rows)
    requested = len(prompts) * 2 * cfg.samples_per_direction
    assert metric_value(metrics, "empty_samples") == requested - len(rows)
    assert chain.artifact(chain.outcomes["generate"].outputs["candidates"]).meta == {"rows": len(rows)}
