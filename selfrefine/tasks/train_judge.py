"""`train_judge`: train the judge, of the kind `judge_kind` names.

- `generative` (default): fine-tune the decoder judge on Chain-of-Hindsight texts, evaluation
  prompts and kept STaR rationales, with the loss on the answer/response tokens only.
- `reward_head`: a scalar head on the same backbone, trained with the Bradley–Terry loss on the
  pairs (TRL RewardTrainer), optionally with GRM regularisation and MORE source reweighting
  (`reward_recipe`). STaR rationales are not used: a reward head has no chain of thought.

Inputs (by role): `seed_pairs_*` (human pairs), optional `self_pairs_*` (the previous iteration's
filtered pairs), optional `rationales` (the previous iteration's kept rationales), optional
`init_judge` (the previous judge to continue from). Output: `judge` (a `save_pretrained` directory
with its `training_log.json` and `judge.json`, which names the kind so that later stages load it
with the right class).

With `keep_best` set, some seed pairs are held back from training and the output is the previous
judge unless the new one judges them better (`scoring.judge_gate`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from selfrefine.data import PreferencePair
from selfrefine.errors import DataError, UnknownDimensionError
from selfrefine.models.dimensions import dimension_definitions_field, get_dimension
from selfrefine.models.judge_info import JudgeKind
from selfrefine.models.training.config import DPORecipeConfig, SFTRecipeConfig
from selfrefine.models.training.judge_examples import ExampleKind, build_judge_examples
from selfrefine.models.training.reward_config import RewardRecipeConfig
from selfrefine.runtime.inputs import inputs_with_prefix, read_pairs, sample
from selfrefine.runtime.keys import model_fingerprint
from selfrefine.runtime.stage import Output, Stage, StageContext, StageReturn
from selfrefine.scoring.judge_gate import KeepBestConfig

log = logging.getLogger(__name__)

class TrainJudgeConfig(BaseModel):
    """How the judge is trained."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    judge_kind: JudgeKind = Field("generative", description=(
        "'generative': the decoder judge answers Yes/No and A/B prompts (trained by `recipe`); "
        "'reward_head': a scalar head on the last token of the same backbone, trained with the "
        "Bradley–Terry loss (`reward_recipe`, with optional GRM, MORE and ODIN). Scoring stages load either."))
    base_model: str = Field("packaged", description=(
        "Model to start from when there is no previous judge: 'packaged' (SmolLM2-135M-Instruct), "
        "'tiny' (random test model), a local save_pretrained directory or a hub id."))
    base_model_fingerprint: str | None = Field(None, description=(
        "Filled in by `pin` when the stage runs (see `model_fingerprint`): the content of "
        "base_model, so a changed local model directory gets a new stage key."))
    continue_from_previous: bool = Field(True, description=(
        "Start from the previous iteration's judge when there is one (else from base_model)."))
    example_kinds: list[ExampleKind] = Field(
        default_factory=lambda: ["hindsight", "absolute", "pairwise"], min_length=1, description=(
            "Training texts made from each pair: Chain-of-Hindsight text, the absolute Yes/No "
            "prompt for both responses, the pairwise A/B prompt in both orders."))
    max_seed_pairs: int | None = Field(None, ge=1, description="Use at most this many human pairs (seeded sample).")
    max_self_pairs: int | None = Field(None, ge=1, description="Use at most this many self-generated pairs.")
    replay_seed_pairs: int | None = Field(None, ge=1, description=(
        "When the judge continues from the previous iteration's judge, train on at most this many "
        "human pairs (a fresh seeded sample each iteration) beside the self pairs: enough replay to "
        "keep what the judge learnt from them without another full pass. None = all of them."))
    max_prompt_tokens: int = Field(768, ge=32, description=(
        "Evaluation prompts longer than this lose their oldest context turns. Responses too long for "
        "recipe.max_length even then lose their tails (the metric pairs_truncated), so no pair is left out."))
    recipe: SFTRecipeConfig = Field(default_factory=SFTRecipeConfig, description="The SFT recipe (TRL SFTTrainer).")
    rationale_training: Literal["sft", "star_dpo"] = Field("sft", description=(
        "How kept STaR rationales train the judge: 'sft' adds the correct rationales to the SFT "
        "data; 'star_dpo' leaves them out of SFT and then runs DPO on (correct, incorrect) "
        "rationale pairs for the same prompt."))
    star_dpo_recipe: DPORecipeConfig = Field(default_factory=DPORecipeConfig, description=(
        "The DPO recipe for rationale_training='star_dpo'."))
    reward_recipe: RewardRecipeConfig = Field(default_factory=RewardRecipeConfig, description=(
        "The reward-head recipe for judge_kind='reward_head' (TRL RewardTrainer; GRM, MORE, ODIN, head shape). "
        "Each pair is fitted to its max_length (prompt and the longer response) by cutting the oldest "
        "context turns; a response still too long then loses its tail, so no pair is left out."))
    judge_per_dimension: bool = Field(False, description=(
        "Train one judge per preference dimension of the training pairs, each on its own dimension's "
        "pairs only (as Llama 2 trains separate helpfulness and safety reward models), and score every "
        "item with its dimension's judge. One judge trained on two dimensions trades one against the "
        "other. keep_best then holds back and gates per dimension."))
    dimension_judge_kinds: dict[str, JudgeKind] = Field(default_factory=dict, description=(
        "With judge_per_dimension: the judge kind of a dimension where it differs from judge_kind, e.g. "
        "{harmless: generative}. Each stage scores an item with its dimension's judge, whatever its kind."))
    pair_batches: bool = Field(False, description=(
        "Generative judge: train each pair's examples (the Yes and No absolute prompts, both orders of the "
        "pairwise prompt) in the same batch, in batches of similar length, instead of shuffling the "
        "examples one by one (see `models.training.pair_batches`). Sets the recipe's shuffle off; its "
        "per_device_batch_size must be a multiple of a pair's example count."))
    keep_best: KeepBestConfig | None = Field(None, description=(
        "Hold back some seed pairs from training and output the previous judge instead of the new "
        "one unless the new one judges them better (see `judge_gate`); None = always the new judge."))
    dimension_definitions: dict[str, str] = dimension_definitions_field()

    @property
    def judge_kinds(self) -> set[str]:
        """Every judge kind this config may train."""
        return {self.judge_kind, *self.dimension_judge_kinds.values()}

    def kind_for(self, dimension: str | None) -> JudgeKind:
        """The judge kind of `dimension` (None: the single judge of every dimension)."""
        if dimension is None:
            return self.judge_kind
        for name, kind in self.dimension_judge_kinds.items():
            if get_dimension(name, self.dimension_definitions).name == dimension:
                return kind
        return self.judge_kind

    @model_validator(mode="after")
    def _kind_fits_rationale_training(self) -> TrainJudgeConfig:
        if "generative" not in self.judge_kinds and self.rationale_training == "star_dpo":
            raise ValueError("rationale_training='star_dpo' trains a generative judge on its rationales; a "
                             "reward_head judge has none. Set judge_kind='generative', or rationale_training='sft' "
                             "(a reward head then leaves the rationales unused)")
        return self

    @model_validator(mode="after")
    def _dimension_kinds_need_per_dimension_judges(self) -> TrainJudgeConfig:
        if self.dimension_judge_kinds and not self.judge_per_dimension:
            raise ValueError("dimension_judge_kinds sets the kind of a dimension's own judge; set "
                             "judge_per_dimension: true as well, or remove dimension_judge_kinds")
        for name in self.dimension_judge_kinds:
            try:
                get_dimension(name, self.dimension_definitions)
            except UnknownDimensionError as exc:  # its message lists the known names
                raise ValueError(f"dimension_judge_kinds: {exc}") from None
        return self

    @model_validator(mode="after")
    def _pair_batches_fit_the_batch(self) -> TrainJudgeConfig:
        per_pair = 2 * len(self.example_kinds)
        if self.pair_batches and self.recipe.per_device_batch_size % per_pair:
            raise ValueError(f"pair_batches keeps a pair's {per_pair} examples ({' + '.join(self.example_kinds)}, "
                             f"2 each) in one batch; recipe.per_device_batch_size "
                             f"({self.recipe.per_device_batch_size}) must be a multiple of {per_pair}")
        return self


def seed_pair_limit(cfg: TrainJudgeConfig, *, continuing: bool) -> int | None:
    """How many human pairs this training sees: `max_seed_pairs`, and `replay_seed_pairs` when it
    continues from the previous judge (the smaller of the two when both are set)."""
    limits = [n for n in (cfg.max_seed_pairs, cfg.replay_seed_pairs if continuing else None) if n is not None]
    return min(limits) if limits else None


def pin(config: TrainJudgeConfig) -> TrainJudgeConfig:
    return config.model_copy(update={"base_model_fingerprint": model_fingerprint(config.base_model)})


def read_rationale_examples(inputs, name: Literal["sft", "dpo"], dimension: str | None = None) -> list[dict]:
    """Kept STaR rationales from a `rationales` artifact, if given: `sft` (prompt, completion)
    examples or `dpo` (prompt, chosen, rejected) pairs; only those of `dimension` when it is given
    (rows written before rationales recorded their dimension go to every dimension)."""
    import json

    art = inputs.get("rationales")
    if art is None:
        return []
    with open(art.path / f"{name}.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if dimension is None or r.get("dimension", dimension) == dimension]


def run(ctx: StageContext) -> StageReturn:
    cfg: TrainJudgeConfig = ctx.config
    init = ctx.inputs.get("init_judge")
    seed_pairs = read_pairs(inputs_with_prefix(ctx.inputs, "seed_pairs"), cfg.dimension_definitions)
    self_pairs = sample(read_pairs(inputs_with_prefix(ctx.inputs, "self_pairs"), cfg.dimension_definitions),
                        cfg.max_self_pairs, ctx.seed or 0)
    if cfg.judge_per_dimension:
        judge_dir, meta, metrics = _train_per_dimension(ctx, init.path if init else None, seed_pairs, self_pairs)
    else:
        judge_dir, meta, metrics = _train_and_gate(ctx, ctx.out_dir, init.path if init else None, seed_pairs,
                                                   self_pairs)
    return StageReturn({"judge": Output(judge_dir, "model", meta)}, metrics)


# (judge directory, artifact meta, metrics) of one training
Trained = tuple[Path, dict, list]


def _train_and_gate(ctx: StageContext, out_dir: Path, previous: Path | None, all_seed_pairs: list[PreferencePair],
                    self_pairs: list[PreferencePair], dimension: str | None = None) -> Trained:
    """Train one judge in `out_dir` (from `previous` when continuing) and, with keep_best, gate it
    against `previous` on held-back seed pairs. `dimension` limits the rationales to that dimension."""
    from selfrefine.models.judge_info import read_judge_info
    from selfrefine.models.loading import load_tokenizer
    from selfrefine.scoring import judge_gate

    cfg: TrainJudgeConfig = ctx.config
    kind = cfg.kind_for(dimension)
    continuing = previous is not None and cfg.continue_from_previous
    if continuing and (previous_kind := read_judge_info(previous)["kind"]) != kind:
        # A judge of another kind (or layout) has other weights to continue from: start afresh.
        log.info("train_judge: the previous %sjudge is a %s judge and this one a %s judge; training from %s",
                 f"{dimension} " if dimension else "", previous_kind, kind, cfg.base_model)
        continuing = False
    start = str(previous) if continuing else cfg.base_model
    validation: list[PreferencePair] = []
    if cfg.keep_best is not None:
        all_seed_pairs, validation = judge_gate.split_validation(all_seed_pairs, cfg.keep_best.validation_fraction)
    seed_pairs = sample(all_seed_pairs, seed_pair_limit(cfg, continuing=continuing), ctx.seed or 0)
    train = _train_reward_head if kind == "reward_head" else _train_generative
    judge_dir, meta, metrics = train(ctx, out_dir, start, seed_pairs, self_pairs, load_tokenizer(start), dimension)
    meta = {"started_from": "init_judge" if continuing else cfg.base_model, **meta}
    if cfg.keep_best is not None:
        # Weight averaging needs the same architecture on both sides: a previous judge of this kind.
        average = (previous is not None and kind in cfg.keep_best.weight_average
                   and read_judge_info(previous)["kind"] == kind)
        decision = judge_gate.gate(judge_dir, previous, validation, cfg.keep_best, cfg.dimension_definitions,
                                   average_into=out_dir / "averaged_judge" if average else None)
        judge_dir = judge_gate.output_dir_for(decision, judge_dir, previous, out_dir)
        meta |= {"validation_pairs": len(validation), **decision.meta()}
        metrics += decision.metrics()
    return judge_dir, meta, metrics


def _train_per_dimension(ctx: StageContext, previous: Path | None, seed_pairs: list[PreferencePair],
                         self_pairs: list[PreferencePair]) -> Trained:
    """One judge per dimension of the training pairs, each trained and gated on its own pairs only
    (continuing from the previous judge's sub-judge for that dimension), assembled into a
    per-dimension judge directory (see `per_dimension_judge`)."""
    import shutil

    from selfrefine.models.judge_info import PER_DIMENSION, read_judge_info, sub_judge_dirs, write_judge_info

    cfg: TrainJudgeConfig = ctx.config
    previous_subs = None
    if previous is not None:
        info = read_judge_info(previous)
        previous_subs = sub_judge_dirs(previous, info) if info["kind"] == PER_DIMENSION else None

    def by_dimension(pairs: list[PreferencePair]) -> dict[str, list[PreferencePair]]:
        groups: dict[str, list[PreferencePair]] = {}
        for pair in pairs:
            groups.setdefault(get_dimension(pair.dimension, cfg.dimension_definitions).name, []).append(pair)
        return groups

    seed_by_dim, self_by_dim = by_dimension(seed_pairs), by_dimension(self_pairs)
    judge_dir = ctx.out_dir / "judge"
    judge_dir.mkdir()
    meta: dict = {"per_dimension": True, "dimensions": {}}
    metrics: list = []
    for dim in sorted(seed_by_dim.keys() | self_by_dim.keys()):
        # A dimension new to this iteration starts from the base model; a single previous judge
        # (trained before judge_per_dimension was set) is every dimension's previous judge.
        prev = previous if previous_subs is None else previous_subs.get(dim)
        log.info("train_judge: the %s judge", dim)
        sub_out = ctx.out_dir / "by_dimension" / dim
        sub_out.mkdir(parents=True)
        sub_dir, sub_meta, sub_metrics = _train_and_gate(
            ctx, sub_out, prev, seed_by_dim.get(dim, []), self_by_dim.get(dim, []), dimension=dim)
        shutil.move(str(sub_dir), judge_dir / dim)
        meta["dimensions"][dim] = sub_meta
        metrics += [(name, value, {**labels, "dimension": dim}) for name, value, labels in sub_metrics]
    for dim, sub in sorted((previous_subs or {}).items()):
        if dim not in meta["dimensions"]:  # no pairs of it this time: the judge keeps judging it as before
            shutil.copytree(sub, judge_dir / dim)
            meta["dimensions"][dim] = {"carried_over": True}
    # When this judge is the first iteration's policy, the sub-judge trained on the most pairs generates.
    policy = max(meta["dimensions"], key=lambda d: (meta["dimensions"][d].get("examples", 0), d))
    # Read off the sub-judges themselves: a kept or carried-over judge may be of another kind than configured.
    meta["judge_kinds"] = {d: read_judge_info(judge_dir / d)["kind"] for d in meta["dimensions"]}
    readings = {json.dumps(r, sort_keys=True) for d in meta["dimensions"]
                if (r := read_judge_info(judge_dir / d).get("reading"))}
    # One reading for the whole judge only when its generative sub-judges agree on it.
    reading = {"reading": json.loads(readings.pop())} if len(readings) == 1 else {}
    write_judge_info(judge_dir, PER_DIMENSION, judge_kinds=meta["judge_kinds"],
                     dimensions={d: d for d in meta["dimensions"]}, policy=policy, **reading)
    totals = _totals(meta["dimensions"])
    overall = {"train_examples": totals["examples"], "train_seconds": totals["train_seconds"],
               "turns_cut": totals["turns_cut"], "pairs_truncated": totals["pairs_truncated"]}
    overall |= {k: totals[k] for k in ("validation_accuracy_new", "kept_previous_judge") if k in totals}
    return judge_dir, meta | totals, metrics + [(k, float(v), {}) for k, v in overall.items()]


def _totals(by_dimension: Mapping[str, dict]) -> dict:
    """The whole judge's figures from its sub-judges': counts and training time add up; the
    validation accuracy is pooled over every dimension's held-back pairs; `kept_previous_judge` is
    the share of the gated dimensions whose previous judge was kept."""
    subs = list(by_dimension.values())
    totals: dict = {k: sum(m.get(k, 0) for m in subs)
                    for k in ("examples", "seed_pairs", "self_pairs", "turns_cut", "pairs_truncated", "train_seconds")}
    validated = [m for m in subs if m.get("validation_pairs")]
    n = sum(m["validation_pairs"] for m in validated)
    if n:
        totals["validation_accuracy_new"] = sum(m["validation_accuracy_new"] * m["validation_pairs"]
                                                for m in validated) / n
        with_previous = [m for m in validated if m.get("validation_accuracy_previous") is not None]
        if with_previous:
            totals["kept_previous_judge"] = sum(bool(m["kept_previous_judge"]) for m in with_previous) / len(with_previous)
    return totals


def _train_generative(ctx: StageContext, out_dir: Path, start: str, seed_pairs: list[PreferencePair],
                      self_pairs: list[PreferencePair], tokenizer, dimension: str | None = None) -> Trained:
    """The `generative` kind: SFT on the evaluation prompts (and kept rationales), then STaR-DPO."""
    from datasets import Dataset

    from selfrefine.models.judge_info import trained_reading, write_judge_info
    from selfrefine.models.training.dpo import train_star_dpo
    from selfrefine.models.training.pair_batches import pair_batched
    from selfrefine.models.training.sft import train_sft

    cfg: TrainJudgeConfig = ctx.config
    seed = ctx.seed or 0
    groups, turns_cut, truncated = build_judge_examples(
        seed_pairs + self_pairs, cfg.example_kinds, tokenizer=tokenizer, max_prompt_tokens=cfg.max_prompt_tokens,
        max_length=cfg.recipe.max_length, extra_dimensions=cfg.dimension_definitions)
    star_dpo = cfg.rationale_training == "star_dpo"
    rationale_examples = [] if star_dpo else read_rationale_examples(ctx.inputs, "sft", dimension)
    rationale_rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in rationale_examples]
    recipe = cfg.recipe.model_copy(update={"seed": seed})
    if cfg.pair_batches:
        def length(group: Sequence[dict]) -> int:
            return max(len(tokenizer(e["prompt"] + e["completion"])["input_ids"]) for e in group)

        examples = pair_batched(groups + [[r] for r in rationale_rows], recipe.per_device_batch_size, length,
                                seed=seed)
        recipe = recipe.model_copy(update={"shuffle": False, "group_by_length": False})
    else:
        examples = sample([e for group in groups for e in group] + rationale_rows, None, seed)
    if not examples:
        raise DataError("train_judge: no training examples: no pairs and no rationales")
    if truncated:
        log.warning("train_judge: %d of %d pairs have responses too long for recipe.max_length=%d even without "
                    "context; they are trained on with their responses' tails cut", truncated,
                    len(seed_pairs) + len(self_pairs), cfg.recipe.max_length)
    log.info("train_judge: %d examples (%d seed pairs, %d self pairs, %d rationales) from %s", len(examples),
             len(seed_pairs), len(self_pairs), len(rationale_examples), start)
    judge_dir = out_dir / "judge"
    result = train_sft(start, Dataset.from_list(examples), judge_dir, recipe)
    final_loss = result.loss_history[-1][1] if result.loss_history else float("nan")
    metrics = [("train_examples", float(len(examples)), {}), ("final_loss", float(final_loss), {}),
               ("train_seconds", float(result.seconds), {}), ("turns_cut", float(turns_cut), {}),
               ("pairs_truncated", float(truncated), {})]
    rationale_pairs = read_rationale_examples(ctx.inputs, "dpo", dimension) if star_dpo else []
    if rationale_pairs:
        dpo_dir = out_dir / "judge_star_dpo"
        dpo = train_star_dpo(str(judge_dir), Dataset.from_list(rationale_pairs), dpo_dir,
                             cfg.star_dpo_recipe.model_copy(update={"seed": seed}))
        judge_dir = dpo_dir
        metrics += [("star_dpo_pairs", float(len(rationale_pairs)), {}),
                    ("star_dpo_seconds", float(dpo.seconds), {})]
    write_judge_info(judge_dir, "generative", reading=trained_reading(cfg.example_kinds))
    meta = {"judge_kind": "generative", "examples": len(examples), "seed_pairs": len(seed_pairs),
            "self_pairs": len(self_pairs), "rationales": len(rationale_examples),
            "star_dpo_pairs": len(rationale_pairs), "turns_cut": turns_cut, "pairs_truncated": truncated,
            "final_loss": final_loss, "train_seconds": result.seconds}
    return judge_dir, meta, metrics


def _train_reward_head(ctx: StageContext, out_dir: Path, start: str, seed_pairs: list[PreferencePair],
                       self_pairs: list[PreferencePair], tokenizer, dimension: str | None = None) -> Trained:
    """The `reward_head` kind: Bradley–Terry training of a scalar head (GRM / MORE per the recipe)."""
    from datasets import Dataset

    from selfrefine.models.training.reward import reward_rows, train_reward_head

    cfg: TrainJudgeConfig = ctx.config
    seed = ctx.seed or 0
    recipe = cfg.reward_recipe.model_copy(update={"seed": seed})
    if "rationales" in ctx.inputs:
        log.info("train_judge: a reward_head judge does not train on STaR rationales; the rationales input is unused")
    # The head's own budget, not max_prompt_tokens (the generative judge's prompt budget): a long
    # response would otherwise cost its instruction's start.
    rows, turns_cut = reward_rows(seed_pairs + self_pairs, tokenizer, recipe.max_length, cfg.dimension_definitions,
                                  recipe.input_format, recipe.margin_per_gap)
    log.info("train_judge: reward head on %d pairs (%d seed, %d self) from %s", len(rows), len(seed_pairs),
             len(self_pairs), start)
    judge_dir = out_dir / "judge"
    result = train_reward_head(start, Dataset.from_list(rows), judge_dir, recipe)
    final_loss = result.loss_history[-1][1] if result.loss_history else float("nan")
    metrics = [("train_examples", float(len(rows)), {}), ("final_loss", float(final_loss), {}),
               ("train_seconds", float(result.seconds), {}), ("turns_cut", float(turns_cut), {}),
               ("pairs_truncated", float(result.num_truncated), {})]
    meta = {"judge_kind": "reward_head", "examples": len(rows), "seed_pairs": len(seed_pairs),
            "self_pairs": len(self_pairs), "rationales": 0, "star_dpo_pairs": 0, "turns_cut": turns_cut,
            "pairs_truncated": result.num_truncated,
            "final_loss": final_loss, "train_seconds": result.seconds, "grm": recipe.grm.regularizer if recipe.grm else None,
            "more": recipe.more is not None, "odin": recipe.odin is not None}
    return judge_dir, meta, metrics


STAGE = Stage(name="train_judge", code_version="6", config=TrainJudgeConfig, run=run, pin=pin, gpu=True)
