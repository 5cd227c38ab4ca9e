"""Keep-best gating for `train_judge`: a new judge replaces the previous one only when it judges
held-back seed pairs better.

Self-generated pairs are noisy, and continued training on them can make a judge worse. With
`keep_best` set, `train_judge` holds back the same share of the seed pairs in every
iteration (chosen by content id, so neither the stage seed nor the replay sample moves them),
trains on the rest, then measures the new judge and the previous one on the held-back pairs; the
stage's `judge` output is whichever measures better, the previous one on a tie. Both figures are
recorded as the stage's metrics and in the judge artifact's meta, so the audit shows why a judge
was kept.

With `weight_average` naming the judge's kind, the challenger is not the new judge itself but the
average of its weights with the previous judge's (WARM, `models.weight_average`); the new judge's
own figure is recorded beside it. The held-back pairs are few (about 100 a dimension in the quality
preset), too few to tell two judges apart by what best-of-n needs, so an either/or choice between
them is mostly chance, while the average keeps what both learnt.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from selfrefine.data import PreferencePair
from selfrefine.errors import ConfigError
from selfrefine.models.judge_info import JudgeKind
from selfrefine.scoring.judge_settings import JudgeSettings

log = logging.getLogger(__name__)


class KeepBestConfig(BaseModel):
    """How a new judge is compared with the previous one."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    validation_fraction: float = Field(0.1, gt=0.0, lt=1.0, description=(
        "Share of the seed pairs held back from every iteration's training (the same ones each time: "
        "the lowest content ids, at least one) to compare the new judge with the previous one."))
    min_gain: float = Field(0.0, ge=0.0, lt=1.0, description=(
        "The new judge replaces the previous one only when its validation accuracy is higher by more "
        "than this."))
    pairwise_verdicts: Literal["prompt", "absolute"] = Field("prompt", description=(
        "How a validation pair is judged, as evaluate.pairwise_verdicts: the pairwise prompt in both "
        "orders, or the absolute Yes/No question for each response (a generative judge trained on "
        "absolute prompts). A reward head compares its two rewards either way. "
        "Left unset in a run config, it follows how train_judge.example_kinds trains the judge (the reading "
        "its judge.json records): 'absolute' for a judge trained without the pairwise prompt."))
    weight_average: list[JudgeKind] = Field(default_factory=list, description=(
        "Judge kinds (e.g. [reward_head]) whose new judge challenges the previous one as the average of "
        "both judges' weights (WARM, Ramé et al. 2024) rather than alone, when the previous judge is of the "
        "same kind. The new judge's own validation accuracy is recorded too."))
    judge: JudgeSettings = Field(default_factory=JudgeSettings, description="How both judges are loaded to be compared.")


def split_validation(pairs: Sequence[PreferencePair], fraction: float) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(training pairs, validation pairs): the `fraction` of pairs with the lowest content ids (at
    least one) are held back. The choice depends on the pairs' content only, so every iteration
    holds back the same pairs."""
    n = max(1, round(fraction * len(pairs)))
    if n >= len(pairs):
        raise ConfigError(f"train_judge.keep_best holds back {n} of {len(pairs)} seed pairs and leaves none to train "
                          "on; give more seed pairs or set keep_best: null")
    held = set(sorted(p.id for p in pairs)[:n])
    return [p for p in pairs if p.id not in held], [p for p in pairs if p.id in held]


def validation_accuracy(judge_dir: Path | str, pairs: Sequence[PreferencePair], cfg: KeepBestConfig,
                        dimension_definitions: dict[str, str] | None = None) -> float:
    """Pairwise accuracy of the judge in `judge_dir` on `pairs` (ties count half, as in evaluate)."""
    import gc

    from selfrefine.scoring.judge_eval import evaluate_judge

    judge = cfg.judge.load(str(judge_dir), dimension_definitions)
    try:
        result = evaluate_judge(judge, list(pairs), [], pairwise_verdicts=cfg.pairwise_verdicts)
    finally:
        del judge
        gc.collect()
    return float(result["pairwise"]["accuracy"])


@dataclass(frozen=True)
class GateDecision:
    """The outcome of comparing a new judge with the previous one on the validation pairs."""

    new_accuracy: float
    previous_accuracy: float | None
    kept_previous: bool
    # With weight_average: the averaged judge, which challenged the previous one instead of the new one.
    averaged_accuracy: float | None = None
    averaged_dir: Path | None = None

    def metrics(self) -> list[tuple[str, float, dict]]:
        rows = [("validation_accuracy_new", self.new_accuracy, {})]
        if self.previous_accuracy is not None:
            rows += [("validation_accuracy_previous", self.previous_accuracy, {}),
                     ("kept_previous_judge", float(self.kept_previous), {})]
        if self.averaged_accuracy is not None:
            rows += [("validation_accuracy_averaged", self.averaged_accuracy, {})]
        return rows

    def meta(self) -> dict:
        meta = {"validation_accuracy_new": self.new_accuracy, "validation_accuracy_previous": self.previous_accuracy,
                "kept_previous_judge": self.kept_previous}
        if self.averaged_accuracy is not None:
            meta |= {"validation_accuracy_averaged": self.averaged_accuracy, "averaged_with_previous": True}
        return meta


def gate(new_dir: Path, previous_dir: Path | None, pairs: Sequence[PreferencePair], cfg: KeepBestConfig,
         dimension_definitions: dict[str, str] | None = None, *, average_into: Path | None = None) -> GateDecision:
    """Measure the new judge (and the previous one, when there is one) on the validation pairs. With
    `average_into` and a previous judge, write the average of both judges' weights there and let it,
    not the new judge, challenge the previous one."""
    new = validation_accuracy(new_dir, pairs, cfg, dimension_definitions)
    if previous_dir is None:
        log.info("train_judge: validation accuracy %.3f on %d held-back pairs (no previous judge)", new, len(pairs))
        return GateDecision(new, None, False)
    previous = validation_accuracy(previous_dir, pairs, cfg, dimension_definitions)
    challenger, averaged = new, None
    if average_into is not None:
        from selfrefine.models.weight_average import average_checkpoints

        average_checkpoints(previous_dir, new_dir, average_into)
        challenger = averaged = validation_accuracy(average_into, pairs, cfg, dimension_definitions)
        log.info("train_judge: validation accuracy of the new judge alone %.3f; averaged with the previous one %.3f",
                 new, averaged)
    kept = not challenger > previous + cfg.min_gain
    name = "new" if averaged is None else "averaged"
    log.info("train_judge: validation accuracy %s %.3f, previous %.3f on %d held-back pairs: %s", name, challenger,
             previous, len(pairs), "keeping the previous judge" if kept else f"the {name} judge replaces it")
    return GateDecision(new, previous, kept, averaged, average_into)


def output_dir_for(decision: GateDecision, new_dir: Path, previous_dir: Path | None, out_dir: Path) -> Path:
    """The directory the stage outputs as its `judge`: the new one, the averaged one, or a copy of the
    previous one (the artifact store keeps one copy of equal bytes, so the copy costs no storage).
    The judges not output are removed."""
    if previous_dir is None or not decision.kept_previous:
        if decision.averaged_dir is None:
            return new_dir
        shutil.rmtree(new_dir)
        return decision.averaged_dir
    kept = out_dir / "kept_judge"
    shutil.copytree(previous_dir, kept)
    for directory in (new_dir, decision.averaged_dir):
        if directory is not None:
            shutil.rmtree(directory)
    return kept
