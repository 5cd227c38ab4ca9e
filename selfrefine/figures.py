"""Drawing a run's pictures: its metrics across iterations and a reliability diagram per judge.

Each PNG carries the series it draws as JSON in a PNG text chunk (`SERIES_KEY`), so a picture can be
checked without the store. Matplotlib is imported only when a picture is drawn, and each figure gets
its own Agg canvas: no global backend is switched.
"""

from __future__ import annotations

import json
from pathlib import Path

SERIES_KEY = "selfrefine:series"

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
