"""What a run shows people: the per-iteration summary table and the Prefect UI artifacts.

Each finished iteration publishes two Prefect artifacts: a table of its headline metrics against
the previous iteration, and the lineage of its judge and policy (artifact ids and digests). Every
value comes from the store and passes through `redact`.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from selfrefine.provenance import redact
from selfrefine.storage import repository as repo
from selfrefine.storage.engine import Store
from selfrefine.storage.schema import Metric, StageStatus

log = logging.getLogger(__name__)

SUMMARY_METRICS = (
    ("judge acc", "evaluate", "pairwise_accuracy"),
    ("ECE", "evaluate", "pairwise_calibration_ece"),
    ("pos. consist.", "evaluate", "pairwise_position_consistency"),
    ("abs acc", "evaluate", "absolute_accuracy"),
    ("best-of-n", "evaluate", "bestofn_win_rate"),
    ("longest rule", "evaluate", "bestofn_longest_win_rate"),
    ("rationale keep", "bootstrap_rationales", "keep_rate"),
    ("filter keep", "score_filter", "keep_rate"),
    ("judge loss", "train_judge", "final_loss"),
    # The policy: the pairs it was trained on, and the evaluator's verdict on it (evaluate_policy).
    ("policy pairs", "policy_round", "examples"),
    ("win vs base", "evaluate_policy", "vs_base_win_rate"),
    ("LC win vs base", "evaluate_policy", "vs_base_lc_win_rate"),
    ("win vs prev", "evaluate_policy", "vs_previous_win_rate"),
    ("controllability", "evaluate_policy", "controllability_controllability"),
    ("resp. chars", "evaluate_policy", "mean_length"),
    # The evaluator as an instrument: its best-of-n, and its margin over always picking the longest.
    ("evaluator bon", "evaluate_evaluator", "bestofn_win_rate"),
    ("evaluator − longest", "evaluate_evaluator", "bestofn_margin_over_longest"),
    # With train_judge.keep_best: the new judge on the held-back seed pairs, and whether it lost.
    ("judge val acc", "train_judge", "validation_accuracy_new"),
    ("kept prev judge", "train_judge", "kept_previous_judge"),
)


def _unlabelled(metrics: list[Metric]) -> dict[str, float]:
    return {m.name: m.value for m in metrics if not m.labels}


def iteration_rows(store: Store, run_id: uuid.UUID) -> list[dict[str, Any]]:
    """One dict per iteration: index, status, wall time, the summary metrics, judge and policy."""
    rows = []
    with store.session() as s:
        for it in repo.iterations_of(s, run_id):
            row: dict[str, Any] = {"iteration": it.index, "status": it.status.value,
                                   "seconds": (it.ended_at - it.started_at).total_seconds()
                                   if it.ended_at and it.started_at else None}
            by_stage = {}
            for sr in repo.stage_runs_of(s, it.id):
                producer = repo.producing_stage_run(s, sr)
                by_stage[sr.stage] = (sr, _unlabelled(repo.metrics_of(s, producer.id)),
                                      repo.stage_outputs(s, sr) if sr.status in (
                                          StageStatus.completed, StageStatus.reused) else {})
            for label, stage, name in SUMMARY_METRICS:
                row[label] = by_stage.get(stage, (None, {}, {}))[1].get(name)
            for role, stage in (("judge", "train_judge"), ("policy", "policy_round")):
                art = by_stage.get(stage, (None, {}, {}))[2].get(role)
                row[role] = {"id": str(art.id), "sha256": art.sha256} if art else None
            row["reused_stages"] = sum(sr.status == StageStatus.reused or sr.reused_from_id is not None
                                       for sr, _, _ in by_stage.values())
            rows.append(row)
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def summary_table(store: Store, run_id: uuid.UUID) -> str:
    """A plain-text table of the run's iterations (printed by the CLI and the demo). A metric no
    iteration has — a stage the run's config leaves out, such as keep_best or the policy
    evaluation — gets no column; the columns shown have a value or a failed iteration's dash."""
    rows = iteration_rows(store, run_id)
    shown = [label for label, _, _ in SUMMARY_METRICS if any(r[label] is not None for r in rows)]
    headers = ["iter", "status", "time"] + shown + ["judge sha256"]
    lines = [headers]
    for r in rows:
        judge = r["judge"]["sha256"][:12] if r["judge"] else "-"
        lines.append([str(r["iteration"]), r["status"], f"{r['seconds']:.0f}s" if r["seconds"] else "-"]
                     + [_fmt(r[label]) for label in shown] + [judge])
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in lines)


def _markdown_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: _fmt(v) if not isinstance(v, dict) else v["sha256"][:16] for k, v in r.items()} for r in rows]


def publish_iteration(store: Store, run_id: uuid.UUID, index: int) -> None:
    """Prefect artifacts for iteration `index`: metrics vs the previous iteration, and lineage."""
    try:
        from prefect.artifacts import create_markdown_artifact, create_table_artifact
    except ImportError:  # pragma: no cover - prefect is a dependency
        return
    rows = [r for r in iteration_rows(store, run_id) if r["iteration"] in (index - 1, index)]
    current = next((r for r in rows if r["iteration"] == index), None)
    if current is None:
        return
    previous = next((r for r in rows if r["iteration"] == index - 1), None)
    table = []
    for label, _, _ in SUMMARY_METRICS:
        now, before = current.get(label), previous.get(label) if previous else None
        delta = now - before if isinstance(now, float) and isinstance(before, float) else None
        table.append({"metric": label, f"iteration {index}": _fmt(now),
                      f"iteration {index - 1}": _fmt(before), "change": _fmt(delta)})
    key = f"run-{str(run_id)[:8]}-iter-{index}"
    create_table_artifact(table=redact(table), key=f"{key}-metrics",
                          description=f"Run {run_id}, iteration {index}: metrics against the previous iteration")
    lines = [f"### Lineage of iteration {index} (run `{run_id}`)", ""]
    for role in ("judge", "policy"):
        art = current.get(role)
        if art:
            lines.append(f"- **{role}**: artifact `{art['id']}`, sha256 `{art['sha256']}` — "
                         f"`selfrefine lineage {art['id']}`")
    create_markdown_artifact(markdown=redact("\n".join(lines)), key=f"{key}-lineage",
                             description=f"Judge and policy of iteration {index}")


def publish_run(store: Store, run_id: uuid.UUID) -> None:
    try:
        from prefect.artifacts import create_table_artifact
    except ImportError:  # pragma: no cover
        return
    create_table_artifact(table=redact(_markdown_table(iteration_rows(store, run_id))),
                          key=f"run-{str(run_id)[:8]}-summary", description=f"Run {run_id}: every iteration")
