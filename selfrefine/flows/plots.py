"""A run's pictures: the `report` stage (tasks/report.py) wired into a run.

`plot_run(store, run_id)` runs the report stage through the stage runner once a run's iterations
are done, on every iteration's outputs that feed it (`SOURCES`). The stage run belongs to the run
through its input edges (it has no iteration row of its own); `plots_of(session, run_id)` finds it,
and the last iteration's Prefect flow run gets a markdown artifact that shows the pictures and names
every artifact id and digest.
"""

from __future__ import annotations

import base64
import logging
import uuid
from pathlib import Path

from prefect import task

from selfrefine.errors import NotFoundError
from selfrefine.provenance import redact_text
from selfrefine.runtime.keys import key_for
from selfrefine.runtime.runner import run_stage
from selfrefine.storage import repository as repo
from selfrefine.storage.artifacts import ArtifactStore
from selfrefine.storage.engine import Store, default_store
from selfrefine.storage.schema import Artifact, EdgeKind, StageRun, StageStatus
from selfrefine.tasks.report import STAGE, PlotConfig

log = logging.getLogger(__name__)

# Stage outputs each iteration feeds the report: (stage, output role, input role prefix).
SOURCES = (("evaluate", "metrics", "metrics"), ("score_filter", "report", "filter_report"),
           ("bootstrap_rationales", "rationales", "rationales"), ("evaluate_policy", "metrics", "policy_metrics"))


def report_plan(session, run_id: uuid.UUID) -> tuple[dict[str, uuid.UUID], PlotConfig]:
    """The report stage's inputs for a run — each completed iteration's metrics, filter report and
    rationales (roles `metrics_<i>`, `filter_report_<i>`, `rationales_<i>`) — and its config."""
    inputs: dict[str, uuid.UUID] = {}
    judges: dict[str, str] = {}
    for it in repo.iterations_of(session, run_id):
        for stage, output, prefix in SOURCES:
            row = repo.stage_run_for(session, it.id, stage)
            if row is None or row.status not in (StageStatus.completed, StageStatus.reused):
                continue
            art = repo.stage_outputs(session, row).get(output)
            if art is not None:
                inputs[f"{prefix}_{it.index}"] = art.id
            if stage == "evaluate" and (judge := repo.stage_inputs(session, row).get("judge")):
                judges[str(it.index)] = judge.sha256
    return inputs, PlotConfig(judge_digests=judges)


def plots_of(session, run_id: uuid.UUID) -> dict[str, Artifact]:
    """The run's plot artifacts by role (empty if the report stage has not run for these inputs)."""
    inputs, config = report_plan(session, run_id)
    if not inputs:
        return {}
    digests = {role: session.get_one(Artifact, art).sha256 for role, art in inputs.items()}
    key, _ = key_for(STAGE, config, digests, None)
    done = repo.completed_stage_run(session, key)
    return repo.stage_outputs(session, done) if done is not None else {}


def plot_run(store: Store, run_id: uuid.UUID):
    """Run (or reuse) the report stage of a finished run and link its pictures from the last
    iteration's Prefect artifacts. Returns the stage outcome."""
    with store.session() as s:
        inputs, config = report_plan(s, run_id)
        its = repo.iterations_of(s, run_id)
        last = its[-1] if its else None
    if not any(role.startswith("metrics_") for role in inputs) or last is None:
        raise NotFoundError(f"run {run_id} has no evaluated iteration to plot")
    outcome = run_stage(STAGE, config, inputs, store=store)
    _publish(store, run_id, last.index, last.prefect_flow_run_id, outcome.stage_run_id)
    return outcome


@task(name="report", persist_result=False)
def plot_run_task(run_id: uuid.UUID) -> str:
    """The report stage as a Prefect task of the run's flow; returns its stage run id."""
    return str(plot_run(default_store(), run_id).stage_run_id)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _publish(store: Store, run_id: uuid.UUID, index: int, flow_run_id: str | None,
             stage_run_id: uuid.UUID) -> None:
    """A markdown artifact on the last iteration's flow run: the pictures inline, and each
    artifact's id, digest and stored path."""
    from prefect.artifacts import MarkdownArtifact

    artifacts = ArtifactStore()
    with store.session() as s:
        row = s.get_one(StageRun, stage_run_id)
        producer = repo.producing_stage_run(s, row)
        made = repo.edges_of(s, producer.id, EdgeKind.makes)
        files = [(role, str(a.id), a.sha256, artifacts.local_path(a.uri)) for role, a in made]
    lines = [f"### Plots of run `{run_id}`", "",
             f"Report stage run `{producer.id}`; every picture: `selfrefine lineage <artifact id>`.", ""]
    for role, art_id, sha, path in sorted(files, key=lambda f: (f[0] != "metrics_plot", f[0])):
        lines.append(f"**{role}**: artifact `{art_id}`, sha256 `{sha}`, file `{path}`")
        lines.append("")
        if role != "plot_data":
            lines += [f"![{role}]({_data_uri(path)})", ""]
    key = f"run-{str(run_id)[:8]}-iter-{index}-plots"
    MarkdownArtifact(key=key, markdown=redact_text("\n".join(lines)),
                     description=f"Run {run_id}: metrics across iterations and reliability diagrams",
                     flow_run_id=uuid.UUID(flow_run_id) if flow_run_id else None).create()
    log.info("plots of run %s: %s", run_id, ", ".join(role for role, *_ in files))
