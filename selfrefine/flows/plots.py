"""Pictures of a run: its metrics across iterations and a reliability diagram per evaluated judge.

`plot_run(store, run_id)` runs the `report` stage through the stage runner once a run's iterations
are done. Its inputs are, for every iteration i, the evaluate metrics (`metrics_<i>`), the
score_filter report (`filter_report_<i>`), the bootstrapped rationales (`rationales_<i>`) and, when
the run evaluates its policy, the evaluate_policy metrics (`policy_metrics_<i>`), so its lineage
reaches every number it draws and a resume that changes nothing reuses it. It makes:

    metrics_plot          PNG: judge pairwise/absolute accuracy, ECE, best-of-n win rate, filter
                          and rationale keep rates, and the policy's win rates and
                          controllability, one point per iteration
    reliability_iter_<i>  PNG: reliability diagram of iteration i's judge (pairwise verdicts)
    plot_data             JSON: every plotted series and bin, exactly as drawn

Each PNG also carries its own series as JSON in a PNG text chunk (`selfrefine:series`), so a
picture can be checked without the store. The stage run belongs to the run through its input
edges (it has no iteration row of its own); `plots_of(session, run_id)` finds it, and the last
iteration's Prefect flow run gets a markdown artifact that shows the pictures and names every
artifact id and digest.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from pathlib import Path
from typing import Any

from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from selfrefine.errors import DataError, NotFoundError
from selfrefine.provenance import redact_text
from selfrefine.storage import repository as repo
from selfrefine.storage.artifacts import ArtifactStore
from selfrefine.storage.engine import Store, default_store
from selfrefine.storage.schema import Artifact, EdgeKind, StageRun, StageStatus
from selfrefine.tasks.keys import stage_key
from selfrefine.tasks.runner import Output, StageContext, StageReturn, run_stage

STAGE = "report"
CODE_VERSION = "2"  # 2: the policy panel (evaluate_policy), the longest rule beside best-of-n
SERIES_KEY = "selfrefine:series"
log = logging.getLogger(__name__)

# (series name, legend label) of the metrics plot, in drawing order.
JUDGE_SERIES = (("pairwise_accuracy", "judge pairwise accuracy"), ("absolute_accuracy", "judge absolute accuracy"),
                ("ece", "ECE (pairwise)"), ("bestofn_win_rate", "best-of-n win rate"),
                ("bestofn_longest_win_rate", "best-of-n: always the longest"))
KEEP_SERIES = (("filter_keep_rate", "score_filter keep rate"), ("rationale_keep_rate", "rationale keep rate"))
# The policy by the independent evaluator (evaluate_policy): (series name, legend label, metrics path).
POLICY_SERIES = (("policy_win_rate", "win rate vs base", "vs_base.win_rate"),
                 ("policy_lc_win_rate", "length-controlled win rate vs base", "vs_base.lc_win_rate"),
                 ("policy_win_rate_previous", "win rate vs previous policy", "vs_previous.win_rate"),
                 ("controllability", "controllability (more beats less)", "controllability.controllability"))
# Stage outputs each iteration feeds the report: (stage, output role, input role prefix).
SOURCES = (("evaluate", "metrics", "metrics"), ("score_filter", "report", "filter_report"),
           ("bootstrap_rationales", "rationales", "rationales"), ("evaluate_policy", "metrics", "policy_metrics"))


class PlotConfig(BaseModel):
    """How the run's pictures are drawn."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dpi: int = Field(100, ge=50, le=300, description="Resolution of the PNGs, in dots per inch.")
    judge_digests: dict[str, str] = Field(default_factory=dict, description=(
        "Filled in by `plot_run`: the sha256 of each iteration's evaluated judge (iteration → "
        "digest), named in its reliability diagram."))


# -- the stage function --------------------------------------------------------------------------


def _get(nested: dict, dotted: str) -> Any:
    node: Any = nested
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{what} is not readable JSON: {exc}", path=str(path)) from None


def collect_series(ctx_inputs: dict, judge_digests: dict[str, str] | None = None) -> dict[str, Any]:
    """The plotted numbers, from the report stage's inputs (role → InputArtifact)."""
    indices = sorted(int(role.rsplit("_", 1)[1]) for role in ctx_inputs if role.startswith("metrics_"))
    series: dict[str, Any] = {"iterations": indices, **{name: [] for name, _ in JUDGE_SERIES + KEEP_SERIES},
                              **{name: [] for name, _, _ in POLICY_SERIES}, "reliability": {}}
    for i in indices:
        metrics = _read_json(ctx_inputs[f"metrics_{i}"].path, f"iteration {i} metrics")
        for name, dotted in (("pairwise_accuracy", "pairwise.accuracy"), ("absolute_accuracy", "absolute.accuracy"),
                             ("ece", "pairwise.calibration.ece"), ("bestofn_win_rate", "bestofn.win_rate"),
                             ("bestofn_longest_win_rate", "bestofn.longest_win_rate")):
            series[name].append(_get(metrics, dotted))
        series["reliability"][str(i)] = {
            "ece": _get(metrics, "pairwise.calibration.ece"),
            "judge_sha256": (judge_digests or {}).get(str(i)),
            "bins": _get(metrics, "pairwise.calibration.bins") or []}
        report = ctx_inputs.get(f"filter_report_{i}")
        kept = _read_json(report.path, f"iteration {i} filter report").get("filter", {}) if report else {}
        series["filter_keep_rate"].append(kept["kept"] / kept["input"] if kept.get("input") else None)
        rationales = ctx_inputs.get(f"rationales_{i}")
        stats = _read_json(rationales.path / "stats.json", f"iteration {i} rationale stats") if rationales else {}
        series["rationale_keep_rate"].append(stats.get("keep_rate"))
        policy = ctx_inputs.get(f"policy_metrics_{i}")
        policy_metrics = _read_json(policy.path, f"iteration {i} policy metrics") if policy else {}
        for name, _, dotted in POLICY_SERIES:
            series[name].append(_get(policy_metrics, dotted))
    return series


def _png(fig, path: Path, dpi: int, series: dict) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # the Agg canvas, per figure: no global backend is switched
    fig.savefig(path, format="png", dpi=dpi,
                metadata={SERIES_KEY: json.dumps(series, sort_keys=True), "Software": "selfrefine"})


def draw_metrics(series: dict, path: Path, title: str, dpi: int) -> None:
    from matplotlib.figure import Figure

    policy = tuple((name, label) for name, label, _ in POLICY_SERIES)
    panels = [(JUDGE_SERIES, "judge"), (KEEP_SERIES, "data kept")]
    if any(v is not None for name, _ in policy for v in series[name]):
        panels.append((policy, "policy (independent evaluator)"))
    fig = Figure(figsize=(4.5 * len(panels), 4), layout="constrained")
    axes = fig.subplots(1, len(panels), sharex=True)
    x = series["iterations"]
    for ax, (group, heading) in zip(axes, panels):
        for name, label in group:
            points = [(i, v) for i, v in zip(x, series[name]) if v is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=label)
        ax.set_title(heading)
        ax.set_xlabel("iteration")
        ax.set_xticks(x)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=10)
    _png(fig, path, dpi, {k: series[k] for k in ["iterations", *(n for n, _ in JUDGE_SERIES + KEEP_SERIES + policy)]})


def draw_reliability(diagram: dict, path: Path, title: str, dpi: int) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = fig.subplots()
    bins = diagram["bins"]
    full = [b for b in bins if b.get("count")]
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    centres = [(b["lower"] + b["upper"]) / 2 for b in full]
    widths = [b["upper"] - b["lower"] for b in full]
    ax.bar(centres, [b["accuracy"] for b in full], width=widths, edgecolor="black", alpha=0.7,
           label="accuracy")
    # The gap between each bin's accuracy and its mean confidence: what ECE averages.
    ax.bar(centres, [abs(b["mean_confidence"] - b["accuracy"]) for b in full], width=widths,
           bottom=[min(b["mean_confidence"], b["accuracy"]) for b in full], color="tab:red", alpha=0.25,
           hatch="//", edgecolor="tab:red", label="gap to mean confidence")
    for x, b in zip(centres, full):
        ax.annotate(f"n={b['count']}", (x, max(b["accuracy"], b["mean_confidence"])), ha="center",
                    va="bottom", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("confidence of the predicted option")
    ax.set_ylabel("accuracy")
    ece = diagram.get("ece")
    ax.set_title(f"{title}\nECE {ece:.3f}" if isinstance(ece, (int, float)) else title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    _png(fig, path, dpi, diagram)


def run(ctx: StageContext) -> StageReturn:
    cfg: PlotConfig = ctx.config
    series = collect_series(ctx.inputs, cfg.judge_digests)
    if not series["iterations"]:
        raise DataError("the report stage needs at least one iteration's evaluate metrics (metrics_<i>)")
    outputs = {}
    metrics_png = ctx.out_dir / "metrics.png"
    draw_metrics(series, metrics_png, f"metrics across {len(series['iterations'])} iterations", cfg.dpi)
    outputs["metrics_plot"] = Output(metrics_png, "plot", {"iterations": series["iterations"]})
    for i in series["iterations"]:
        png = ctx.out_dir / f"reliability-iter-{i}.png"
        diagram = series["reliability"][str(i)]
        judge = f" (sha256 {diagram['judge_sha256'][:12]})" if diagram["judge_sha256"] else ""
        draw_reliability(diagram, png, f"judge of iteration {i}{judge}", cfg.dpi)
        outputs[f"reliability_iter_{i}"] = Output(png, "plot", {"iteration": i})
    data = ctx.out_dir / "plot_data.json"
    data.write_text(json.dumps(series, indent=2, sort_keys=True))
    outputs["plot_data"] = Output(data, "report", {"iterations": series["iterations"]})
    return StageReturn(outputs, [("plotted_iterations", float(len(series["iterations"])), {})])


# -- wiring into a run ---------------------------------------------------------------------------


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
    done = repo.completed_stage_run(session, stage_key(STAGE, CODE_VERSION, config, digests, None))
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
    outcome = run_stage(STAGE, run, config, inputs, code_version=CODE_VERSION,
                        store=store)
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
