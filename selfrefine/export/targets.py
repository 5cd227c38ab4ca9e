"""What an id given to `selfrefine export` names, and the facts its model card needs.

An id resolves (`repository.resolve`) to a model artifact (exported as the policy or judge its
producing stage made), a stage run of `train_judge` or `policy_round` (its output), or an
iteration or run (its last iteration's judge and policy). For each model the lineage is read
from the store: the stage run that made it, its stored config, its inputs and their digests, the
datasets upstream of it, and the metrics of the stages that evaluated it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from selfrefine.errors import NotFoundError
from selfrefine.storage import repository as repo
from selfrefine.storage.artifacts import ArtifactStore
from selfrefine.storage.lineage import lineage
from selfrefine.storage.schema import Artifact, ArtifactEdge, EdgeKind, Iteration, Run, StageRun

ROLE_OF_STAGE = {"train_judge": "judge", "policy_round": "policy"}


@dataclass
class ExportTarget:
    """One model to export and everything its card says about where it came from."""

    role: str  # "judge" or "policy"
    artifact_id: str
    sha256: str
    path: Path
    stage_run_id: str
    stage_config: dict[str, Any]
    meta: dict[str, Any]
    run_id: str | None = None
    run_name: str | None = None
    iteration: int | None = None
    base_model: str | None = None
    parents: dict[str, dict[str, str]] = field(default_factory=dict)  # input role -> {id, kind, sha256}
    datasets: list[dict[str, str]] = field(default_factory=list)  # {role, source, sha256}
    metrics: list[dict[str, Any]] = field(default_factory=list)  # {stage, name, value, labels}


def export_targets(session: Session, text: str, artifacts: ArtifactStore) -> list[ExportTarget]:
    """The models `text` names, each with its lineage and metrics (see the module docstring)."""
    obj = repo.resolve(session, text)
    if isinstance(obj, Artifact):
        producer = session.get(StageRun, obj.stage_run_id) if obj.stage_run_id else None
        if obj.kind != "model" or producer is None or producer.stage not in ROLE_OF_STAGE:
            raise NotFoundError(f"{text!r} is a {obj.kind} artifact, not a judge or policy made by a run; "
                                "give a model artifact id, a run id or an iteration id")
        return [_target(session, obj, producer, artifacts)]
    if isinstance(obj, Run):
        iterations = repo.iterations_of(session, obj.id)
        if not iterations:
            raise NotFoundError(f"run {obj.id} has no iteration yet: nothing to export")
        obj = iterations[-1]
    stage_runs = ([obj] if isinstance(obj, StageRun) else
                  [sr for stage in ("policy_round", "train_judge")
                   if (sr := repo.stage_run_for(session, obj.id, stage)) is not None])
    found = []
    for sr in stage_runs:
        if sr.stage not in ROLE_OF_STAGE:
            raise NotFoundError(f"{text!r} is a {sr.stage} stage run, which makes no model; give a "
                                "train_judge or policy_round stage run, a model artifact, an iteration or a run")
        outputs = repo.stage_outputs(session, sr)
        art = outputs.get(ROLE_OF_STAGE[sr.stage])
        if art is not None:
            found.append(_target(session, art, repo.producing_stage_run(session, sr), artifacts))
    if not found:
        raise NotFoundError(f"{text!r} has no finished judge or policy yet: nothing to export")
    return sorted(found, key=lambda t: t.role, reverse=True)  # policy, then judge


def _target(session: Session, art: Artifact, producer: StageRun, artifacts: ArtifactStore) -> ExportTarget:
    target = ExportTarget(role=ROLE_OF_STAGE[producer.stage], artifact_id=str(art.id), sha256=art.sha256,
                          path=artifacts.local_path(art.uri), stage_run_id=str(producer.id),
                          stage_config=dict(producer.config or {}), meta=dict(art.meta or {}))
    if producer.iteration_id is not None:
        it = session.get_one(Iteration, producer.iteration_id)
        run = session.get_one(Run, it.run_id)
        target.run_id, target.run_name, target.iteration = str(run.id), run.name, it.index
        target.base_model = (run.config or {}).get("train_judge", {}).get("base_model")
    target.parents = {role: {"id": str(a.id), "kind": a.kind, "sha256": a.sha256}
                      for role, a in repo.stage_inputs(session, producer).items()}
    graph = lineage(session, art)
    makers = graph.makers()
    for aid, a in sorted(graph.artifacts.items(), key=lambda kv: kv[1].name):
        maker = graph.stage_runs.get(makers.get(aid, ""))
        if a.kind == "dataset" and maker is not None and maker.stage == "ingest_data" and _upstream(graph, aid, str(art.id)):
            target.datasets.append({"role": a.name, "source": str((a.meta or {}).get("source", a.name)),
                                    "sha256": a.sha256})
    target.metrics = _metrics(session, art, target.role)
    return target


def _upstream(graph: Any, aid: str, of: str) -> bool:
    """Whether artifact `aid` is an ancestor of artifact `of` in the lineage graph."""
    makers, uses = graph.makers(), graph.uses_of()
    seen, todo = set(), [of]
    while todo:
        current = todo.pop()
        for _, parent in uses.get(makers.get(current, ""), []):
            if parent == aid:
                return True
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return False


def _users(session: Session, artifact_id: Any, role: str, stage: str) -> list[StageRun]:
    return list(session.scalars(
        select(StageRun).join(ArtifactEdge, ArtifactEdge.stage_run_id == StageRun.id)
        .where(ArtifactEdge.artifact_id == artifact_id, ArtifactEdge.kind == EdgeKind.uses,
               ArtifactEdge.role == role, StageRun.stage == stage).order_by(StageRun.created)))


def _metrics(session: Session, art: Artifact, role: str) -> list[dict[str, Any]]:
    """The metrics of the stages that evaluated the model: `evaluate` for a judge, `evaluate_policy`
    (through the policy's answers, `policy_responses`) for a policy. The latest evaluation counts."""
    if role == "judge":
        evaluations = _users(session, art.id, "judge", "evaluate")
    else:
        evaluations = []
        for answering in _users(session, art.id, "policy", "policy_responses"):
            answers = repo.stage_outputs(session, answering).get("responses")
            if answers is not None:
                evaluations += _users(session, answers.id, "responses", "evaluate_policy")
    if not evaluations:
        return []
    producer = repo.producing_stage_run(session, evaluations[-1])
    return [{"stage": producer.stage, "name": m.name, "value": m.value, "labels": dict(m.labels or {})}
            for m in repo.metrics_of(session, producer.id)]
