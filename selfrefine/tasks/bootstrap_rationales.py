"""`bootstrap_rationales`: STaR for the judge.

On labelled pairs, sample chain-of-thought rationales ending in "Verdict: A|B"; keep those whose
verdict matches the human label; for pairs where no sample was right, rationalise: sample again
with the correct label as a hint and keep the rationales that reach it (trained on with the
hint-free prompt). Kept rationales become SFT examples; a correct and an incorrect rationale for
the same prompt become a STaR-DPO pair. Inputs: `pairs_*` (labelled pairs), `judge`. Output:
`rationales` (a directory: sft.jsonl, dpo.jsonl, stats.json).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from selfrefine.data import PreferencePair
from selfrefine.models import prompts as P
from selfrefine.models.dimensions import get_dimension
from selfrefine.models.dimensions import dimension_definitions_field
from selfrefine.models.generation.base import MAX_NEW_TOKENS
from selfrefine.runtime.inputs import inputs_with_prefix, read_pairs, require, sample
from selfrefine.runtime.stage import Output, Stage, StageContext, StageReturn
from selfrefine.scoring.judge_settings import JudgeSettings

log = logging.getLogger(__name__)


class BootstrapConfig(BaseModel):
    """How rationales are sampled and kept."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_pairs: int = Field(32, ge=1, description="Labelled pairs to bootstrap on (seeded sample).")
    samples_per_pair: int = Field(2, ge=1, description="Rationales sampled per pair (and per rationalisation).")
    rationalize: bool = Field(True, description="Retry missed pairs with the label as a hint (STaR rationalisation).")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(128, ge=8, le=MAX_NEW_TOKENS, description="Longest rationale, in tokens.")
    judge: JudgeSettings = Field(default_factory=JudgeSettings, description="How the judge is loaded.")
    dimension_definitions: dict[str, str] = dimension_definitions_field()


@dataclass(frozen=True)
class Shown:
    """A labelled pair as shown to the judge: which option holds the human-chosen response."""

    pair: PreferencePair
    label: Literal["A", "B"]

    @property
    def options(self) -> tuple[str, str]:
        p = self.pair
        return (p.chosen, p.rejected) if self.label == "A" else (p.rejected, p.chosen)


def present(pairs: Sequence[PreferencePair], seed: int) -> list[Shown]:
    """Show each pair with the chosen response as A or B at random (seeded): labels are balanced,
    so a judge that always says "A" keeps only half."""
    rng = random.Random(seed)
    return [Shown(p, "A" if rng.random() < 0.5 else "B") for p in pairs]


def split_samples(shown: Shown, verdict) -> tuple[list[str], list[str]]:
    """(correct, incorrect) rationale texts among a CoT verdict's samples; unparsable ones are dropped."""
    right = [s.text.strip() for s in verdict.samples if s.verdict == shown.label]
    wrong = [s.text.strip() for s in verdict.samples if s.verdict not in (None, shown.label)]
    return right, wrong


def rationale_records(shown: Sequence[Shown], first, second: Mapping[int, object],
                      extra: Mapping[str, str] | None) -> tuple[list[dict], list[dict], dict]:
    """SFT examples, STaR-DPO pairs and counts from the first pass and the rationalisation pass."""
    sft, dpo = [], []
    kept_direct = kept_hint = 0
    for i, (s, verdict) in enumerate(zip(shown, first)):
        dim = get_dimension(s.pair.dimension, extra)
        prompt = P.cot_prompt(s.pair.context, *s.options, dim)
        right, wrong = split_samples(s, verdict)
        if right:
            kept_direct += 1
        elif i in second:
            right = split_samples(s, second[i])[0]
            kept_hint += bool(right)
        for text in dict.fromkeys(right):  # distinct texts, in sample order
            sft.append({"prompt": prompt, "completion": " " + text, "pair_id": s.pair.id,
                        "label": s.label, "dimension": dim.name})
        for good, bad in zip(dict.fromkeys(right), dict.fromkeys(wrong)):
            dpo.append({"prompt": prompt, "chosen": " " + good, "rejected": " " + bad,
                        "pair_id": s.pair.id, "dimension": dim.name})
    n = len(shown)
    stats = {"pairs": n, "kept_direct": kept_direct, "kept_rationalized": kept_hint,
             "keep_rate": kept_direct / n if n else 0.0,
             "keep_rate_with_rationalization": (kept_direct + kept_hint) / n if n else 0.0,
             "sft_examples": len(sft), "dpo_pairs": len(dpo)}
    return sft, dpo, stats


def run(ctx: StageContext) -> StageReturn:
    from selfrefine.models.generation.base import SamplingParams
    from selfrefine.models.judge_info import kinds_by_dimension
    from selfrefine.models.judge_types import PairItem, truncation_metrics

    cfg: BootstrapConfig = ctx.config
    seed = ctx.seed or 0
    judge_dir = str(require(ctx.inputs, "judge", ctx.stage).path)
    pairs = read_pairs(inputs_with_prefix(ctx.inputs, "pairs"), cfg.dimension_definitions)
    # A reward head scores; it writes no chain of thought, and its training uses no rationales. The
    # kinds are in judge.json, so no model need be loaded to find out which pairs can get rationales.
    kinds = kinds_by_dimension(judge_dir)
    if None not in kinds:  # a per-dimension judge: rationales for the dimensions of its generative sub-judges
        writers = {dim for dim, kind in kinds.items() if kind == "generative"}
        usable = [p for p in pairs if get_dimension(p.dimension, cfg.dimension_definitions).name in writers]
        if len(usable) < len(pairs):
            log.info("bootstrap_rationales: %d of %d pairs are of dimensions without a generative judge "
                     "(which gives no rationales); bootstrapping on the other %d", len(pairs) - len(usable),
                     len(pairs), len(usable))
        pairs = usable
    elif kinds[None] == "reward_head":
        log.warning("bootstrap_rationales: the judge is a reward head, which gives no rationales; writing none")
        pairs = []
    shown = present(sample(pairs, cfg.max_pairs, seed), seed)
    judge = cfg.judge.load(judge_dir, cfg.dimension_definitions) if shown else None
    items = [PairItem(s.pair.context, *s.options, dimension=s.pair.dimension) for s in shown]
    params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p,
                            max_new_tokens=cfg.max_new_tokens, seed=seed)
    first = judge.compare_cot(items, k=cfg.samples_per_pair, params=params) if items else []
    missed = [i for i, (s, v) in enumerate(zip(shown, first)) if not split_samples(s, v)[0]]
    second = {}
    if cfg.rationalize and missed:
        hinted = judge.compare_cot([items[i] for i in missed], k=cfg.samples_per_pair,
                                   params=SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p,
                                                         max_new_tokens=cfg.max_new_tokens, seed=seed + 1),
                                   hints=[shown[i].label for i in missed])
        second = dict(zip(missed, hinted))
    sft, dpo, stats = rationale_records(shown, first, second, cfg.dimension_definitions)
    stats.update((name, int(value)) for name, value, _ in truncation_metrics(judge))
    out = ctx.out_dir / "rationales"
    out.mkdir()
    for name, rows in (("sft", sft), ("dpo", dpo)):
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    (out / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True))
    log.info("bootstrap_rationales: kept %d/%d directly, %d by rationalisation; %d SFT, %d DPO",
             stats["kept_direct"], stats["pairs"], stats["kept_rationalized"], len(sft), len(dpo))
    metrics = [(k, float(v), {}) for k, v in sorted(stats.items())]
    return StageReturn({"rationales": Output(out, "rationales", stats)}, metrics)


STAGE = Stage(name="bootstrap_rationales", code_version="3", config=BootstrapConfig, run=run, gpu=True)
