"""The `report` stage: pictures of a run, drawn once its iterations are done.

Its inputs are, for every iteration i, the evaluate metrics (`metrics_<i>`), the score_filter report
(`filter_report_<i>`), the bootstrapped rationales (`rationales_<i>`) and, when the run evaluates its
policy, the evaluate_policy metrics (`policy_metrics_<i>`), so its lineage reaches every number it
draws and a resume that changes nothing reuses it. It makes:

    metrics_plot          PNG: judge pairwise/absolute accuracy, ECE, best-of-n win rate, filter
                          and rationale keep rates, and the policy's win rates and
                          controllability, one point per iteration
    reliability_iter_<i>  PNG: reliability diagram of iteration i's judge (pairwise verdicts)
    plot_data             JSON: every plotted series and bin, exactly as drawn

`flows/plots.py` gathers a run's inputs for it and runs it after the last iteration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from selfrefine.errors import DataError
from selfrefine.figures import JUDGE_SERIES, KEEP_SERIES, POLICY_SERIES, draw_metrics, draw_reliability
from selfrefine.runtime.stage import Output, Stage, StageContext, StageReturn


class PlotConfig(BaseModel):
    """How the run's pictures are drawn."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dpi: int = Field(100, ge=50, le=300, description="Resolution of the PNGs, in dots per inch.")
    judge_digests: dict[str, str] = Field(default_factory=dict, description=(
        "Filled in by `plot_run`: the sha256 of each iteration's evaluated judge (iteration → "
        "digest), named in its reliability diagram."))


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


STAGE = Stage(name="report", code_version="2", config=PlotConfig, run=run, per_iteration=False)
