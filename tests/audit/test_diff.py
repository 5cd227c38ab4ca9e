"""`selfrefine diff RUN_A:ITER RUN_B:ITER` on the finished tiny runs."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from selfrefine.cli import main
from selfrefine.storage import repository as repo
from selfrefine.storage.engine import default_store
from tests.audit.conftest import REPO


def _diff(capsys, a: str, b: str) -> dict:
    assert main(["diff", a, b, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _outputs(run_id: str, index: int, stage: str) -> dict:
    """{role: (artifact id, sha256)} of a stage's outputs, straight from the store."""
    with default_store().session() as s:
        it = next(i for i in repo.iterations_of(s, uuid.UUID(run_id)) if i.index == index)
        row = repo.stage_run_for(s, it.id, stage)
        return {role: (str(a.id), a.sha256) for role, a in repo.stage_outputs(s, row).items()}


def _metric(run_id: str, index: int, stage: str, name: str) -> float:
    with default_store().session() as s:
        it = next(i for i in repo.iterations_of(s, uuid.UUID(run_id)) if i.index == index)
        row = repo.producing_stage_run(s, repo.stage_run_for(s, it.id, stage))
        return next(m.value for m in repo.metrics_of(s, row.id) if m.name == name and not m.labels)


def _art(entry: dict | None) -> tuple[str, str] | None:
    return None if entry is None else (entry["id"], entry["sha256"])


def test_two_iterations_of_one_run(runs, capsys):
    d = _diff(capsys, f"{runs.base[:8]}:1", f"{runs.base}:2")
    assert (d["a"]["iteration"], d["b"]["iteration"]) == (1, 2) and d["a"]["run"] == d["b"]["run"] == runs.base
    # The same data, ingested once: every data set has the same digest on both sides.
    data = _outputs(runs.base, 1, "ingest_data")
    assert {role: _art(e["a"]) for role, e in d["data"]["outputs"].items()} == data
    assert all(e["same"] for e in d["data"]["outputs"].values())
    # A new judge, trained from iteration 1's judge, filtered pairs and rationales.
    judge1, judge2 = _outputs(runs.base, 1, "train_judge")["judge"], _outputs(runs.base, 2, "train_judge")["judge"]
    assert (_art(d["judge"]["outputs"]["judge"]["a"]), _art(d["judge"]["outputs"]["judge"]["b"])) == (judge1, judge2)
    parents = d["judge"]["parents"]
    assert parents["init_judge"]["a"] is None and _art(parents["init_judge"]["b"]) == judge1
    assert _art(parents["self_pairs"]["b"]) == _outputs(runs.base, 1, "score_filter")["pairs"]
    assert _art(parents["rationales"]["b"]) == _outputs(runs.base, 1, "bootstrap_rationales")["rationales"]
    assert parents["seed_pairs_0"]["same"]
    # Iteration 2's policy starts from iteration 1's; iteration 1's starts from its judge.
    policy_parents = d["policy"]["parents"]["policy"]
    assert _art(policy_parents["a"]) == judge1
    assert _art(policy_parents["b"]) == _outputs(runs.base, 1, "policy_round")["policy"]
    # One run: no config field differs; the data stage key is shared, the judge's is not.
    assert not [k for k, e in d["config"].items() if not e["same"]]
    assert d["stages"]["ingest_data"]["key"]["same"] and not d["stages"]["train_judge"]["key"]["same"]
    acc = d["metrics"]["evaluate.pairwise_accuracy"]
    assert (acc["a"], acc["b"]) == (_metric(runs.base, 1, "evaluate", "pairwise_accuracy"),
                                    _metric(runs.base, 2, "evaluate", "pairwise_accuracy"))
    assert acc["change"] == pytest.approx(acc["b"] - acc["a"])


def test_a_knob_change_shows_as_one_config_field_and_a_new_policy(runs, capsys):
    d = _diff(capsys, f"{runs.base}:1", f"{runs.variant}:1")
    assert {k: (e["a"], e["b"]) for k, e in d["config"].items() if not e["same"]} == {
        "policy_round.method": ("dpo", "rejection_sampling"), "n_iterations": (2, 1)}
    # The judge was reused across runs: the same artifact, the same parents.
    assert d["judge"]["outputs"]["judge"]["same"] and all(e["same"] for e in d["judge"]["parents"].values())
    assert all(e["same"] for e in d["data"]["outputs"].values())
    # Another method on the same pairs from the same start: a different policy.
    policy = d["policy"]
    assert not policy["outputs"]["policy"]["same"]
    assert all(e["same"] for e in policy["parents"].values()) and set(policy["parents"]) == {"pairs", "scores", "policy"}
    assert _art(policy["outputs"]["policy"]["b"]) == _outputs(runs.variant, 1, "policy_round")["policy"]
    # ... which answers the policy prompts anew and is judged anew; the base's answers are the same.
    changed = {st for st, e in d["stages"].items() if not e["key"]["same"]}
    assert changed == {"policy_round", "policy_responses", "evaluate_policy"}
    judged = d["policy_evaluation"]["parents"]
    assert judged["base_responses"]["same"] and not judged["responses"]["same"]
    assert "evaluate_policy.vs_base_win_rate" in d["metrics"]


def test_text_diff_names_full_digests_and_the_changed_field(runs, capsys):
    assert main(["diff", f"{runs.base}:1", runs.variant]) == 0  # no ':ITER' = the last iteration
    text = capsys.readouterr().out
    judge = _outputs(runs.base, 1, "train_judge")["judge"]
    policy_a, policy_b = (_outputs(r, 1, "policy_round")["policy"] for r in (runs.base, runs.variant))
    assert f"= makes judge: model artifact {judge[0]} sha256:{judge[1]}" in text
    assert f"A model artifact {policy_a[0]} sha256:{policy_a[1]}" in text
    assert f"B model artifact {policy_b[0]} sha256:{policy_b[1]}" in text
    assert "≠ policy_round.method: A dpo  B rejection_sampling" in text
    assert "config: 2 of" in text


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfrefine", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_bad_targets_are_one_line_errors(runs):
    cases = {("0000dead:1", f"{runs.base}:1"): "no run, iteration, stage run or artifact matches '0000dead'",
             (f"{runs.base}:9", f"{runs.base}:1"): "there is no iteration 9",
             (f"{runs.base}:x", f"{runs.base}:1"): "expected RUN:ITER"}
    for (a, b), message in cases.items():
        proc = _cli("diff", a, b)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], (a, proc.stderr)
