"""Typed config of the reward-head recipe, with its two optional variants from the literature.

- GRM (Yang et al. 2024, "Regularizing Hidden States Enables Learning Generalizable Reward Model
  for LLMs"): loss = (1 − α)·reward loss + α·text-generation regulariser on the shared hidden
  states, through the kept language-model head.
- MORE (Zeng et al., "On Diversified Preferences of Large Language Model Alignment"): every batch
  holds pairs of every preference source; the per-source reward losses are weighted by the λ on
  the simplex that minimises the norm of the λ-weighted reward-head gradients.
- ODIN (Chen et al. 2024, "ODIN: Disentangled Reward Mitigates Hacking in RLHF"): a second linear
  head on the same features absorbs the responses' length during training and is dropped when the
  judge is saved, so the judge scores with the length-free head alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from selfrefine.models.judge_info import RewardInputFormat
from selfrefine.models.training.config import Runtime, StrictConfig, TrainingConfig

if TYPE_CHECKING:
    import trl


class GRMSettings(StrictConfig):
    """GRM's text-generation regulariser, with the paper's defaults."""

    alpha: float = Field(0.01, gt=0.0, lt=1.0, description=(
        "Weight α of the regulariser: loss = (1 − α)·reward loss + α·regulariser. The paper uses 0.01 "
        "(0.001 for its linear-head variant) and finds 0.1 too large."))
    regularizer: Literal["sft", "dpo", "dpo_noref"] = Field("sft", description=(
        "'sft': −log σ(β·log π(chosen|x)), the paper's default and most stable choice; 'dpo': the DPO loss "
        "against the starting model as reference (a frozen copy, or the adapter switched off with LoRA); "
        "'dpo_noref': −log σ(β·(log π(chosen|x) − log π(rejected|x))), DPO without a reference."))
    beta: float = Field(0.1, gt=0.0, description=(
        "Temperature β inside the regulariser's log-sigmoid (the paper's 0.1). log π is summed over the "
        "response tokens and the EOS."))


class ODINSettings(StrictConfig):
    """ODIN's length-disentangled training: the Bradley–Terry loss is taken on r_Q + r_L, where r_L is
    a second linear head on the same last-token features, and

        loss = BT(r_Q + r_L) + length_weight·(|ρ(r_Q, len)| − ρ(r_L, len)) + orthogonal_weight·|w_Q·w_L|

    with ρ the Pearson correlation over the batch's responses (chosen and rejected) and len each
    response's length in tokens. Only the quality head r_Q is saved: the judge scores with it alone."""

    length_weight: float = Field(1.0, ge=0.0, description=(
        "Weight of the correlation terms: r_Q decorrelated from length, r_L correlated with it."))
    orthogonal_weight: float = Field(1.0, ge=0.0, description=(
        "Weight of |w_Q·w_L|, which keeps the two heads' weight vectors orthogonal."))


class MORESettings(StrictConfig):
    """MORE's per-batch reweighting of the preference sources."""

    max_solver_iterations: int = Field(1000, ge=1, description=(
        "Frank–Wolfe iterations of the min-norm solver per batch (it stops earlier once λ settles)."))


class RewardRecipeConfig(TrainingConfig):
    """A scalar reward head on the last token, trained with the Bradley–Terry loss (TRL RewardTrainer).

    With `more`, the batches are laid out by source (see `MORESettings`); `per_device_batch_size`
    must then be at least the number of sources, and `shuffle` shuffles within each source.
    """

    learning_rate: float = Field(1e-5, gt=0.0, lt=1.0, description="Peak AdamW learning rate (backbone and head).")
    head: Literal["linear", "mlp"] = Field("linear", description=(
        "Reward head on the last token's hidden state: 'linear' (hidden → 1) or 'mlp' (hidden → head_size → "
        "ReLU → 1, the GRM paper's default head)."))
    head_size: int = Field(1024, ge=1, description="Hidden width of the 'mlp' head.")
    input_format: RewardInputFormat = Field("plain", description=(
        "How a conversation and its response are laid out for the head (recorded in judge.json, read the same "
        "way when scoring): 'plain' = the dimension's definition, \"Human: …\" / \"Assistant: …\" turns, "
        "<endofcontext>, \"Assistant: {response}\"; 'chat_template' = the model's own chat template with the "
        "definition as the system turn. Needs a tokenizer with a chat template."))
    margin_per_gap: float = Field(0.0, ge=0.0, json_schema_extra={"key_omits_default": True}, description=(
        "Bradley–Terry margin per unit of a pair's preference gap (the pairs' `gap` field, for graded sources "
        "such as AlpacaEval's preferences): the loss becomes −log σ(r_c − r_r − margin_per_gap·gap), so a pair "
        "the source prefers by more must be separated by more (Llama 2's margin loss; TRL's `margin` column). "
        "Pairs without a gap train with no margin; 0 = plain Bradley–Terry for every pair."))
    grm: GRMSettings | None = Field(None, description=(
        "GRM hidden-state regularisation through the kept LM head; None = plain Bradley–Terry."))
    more: MORESettings | None = Field(None, description=(
        "MORE source reweighting (needs pairs from two or more sources to have an effect); None = off."))
    odin: ODINSettings | None = Field(None, json_schema_extra={"key_omits_default": True}, description=(
        "ODIN's length-disentangled training with a second head that is dropped at scoring (needs the "
        "linear head; not with MORE or group_by_length); None = off."))

    @model_validator(mode="after")
    def _variants_fit_together(self):
        if self.more is not None and self.group_by_length:
            raise ValueError("MORE lays out every batch by source; group_by_length cannot also order them. "
                             "Set group_by_length: false or more: null")
        if self.odin is not None and self.head != "linear":
            raise ValueError("ODIN keeps the two heads' weight vectors orthogonal, which needs head: linear")
        if self.odin is not None and self.group_by_length:
            raise ValueError("ODIN correlates the heads with length within each batch, and group_by_length makes a "
                             "batch's lengths alike; set group_by_length: false or odin: null")
        if self.odin is not None and self.more is not None:
            raise ValueError("ODIN and MORE each replace the reward loss; set one of them to null")
        return self

    def to_trl(self, output_dir: str, runtime: Runtime) -> trl.RewardConfig:
        """The `trl.RewardConfig` for this recipe on the resolved `runtime`."""
        from trl import RewardConfig

        return RewardConfig(
            **self.trainer_arguments(output_dir, runtime),
            # The recipe tokenises itself (prompt and response apart, see reward_judge) and the GRM and
            # MORE fields travel in the batch; the trainer's column pruning would drop them.
            remove_unused_columns=False,
        )
