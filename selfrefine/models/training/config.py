"""Typed configs of the training recipes; each builds the matching TRL config.

Only the knobs a recipe user needs are fields here; everything else keeps TRL's default. Values are
validated on construction (pydantic raises `ValidationError` naming the field); choices that depend
on the machine (bf16, attention kernel, DeepSpeed) are resolved at train time by
`common.resolve_runtime` into a `Runtime`, so one config works on a laptop and on a GPU node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

if TYPE_CHECKING:  # TRL and peft are heavy imports; load them only when a config is turned into one
    import peft
    import trl

DPOLossType = Literal[
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
]


class StrictConfig(BaseModel):
    """Base of the recipe configs. Frozen so a config snapshot stored with a stage run cannot drift;
    extra="forbid" so a typo in a YAML preset fails instead of being silently ignored."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


@dataclass(frozen=True)
class Runtime:
    """The machine-dependent choices a config's 'auto' values resolve to on this machine."""

    device: str
    bf16: bool
    attn_implementation: str
    deepspeed: dict[str, Any] | None


class LoraSettings(StrictConfig):
    """LoRA adapter settings (peft). Adapters are merged into the base weights before saving."""

    r: int = Field(16, gt=0, le=1024, description="Rank of the LoRA update matrices.")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator; the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input, in [0, 1).")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="Module names to adapt (e.g. ['q_proj', 'v_proj']), or 'all-linear' for every linear "
        "layer except the output head.",
    )

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value):
        if isinstance(value, list) and (not value or any(not name.strip() for name in value)):
            raise ValueError("target_modules must be 'all-linear' or a non-empty list of module names")
        return value

    def to_peft(self) -> peft.LoraConfig:
        """The equivalent `peft.LoraConfig` for a causal language model."""
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, task_type="CAUSAL_LM")


class DeepSpeedSettings(StrictConfig):
    """DeepSpeed ZeRO-3 sharding, used only when CUDA GPUs are present (ignored with a logged reason on CPU)."""

    offload_optimizer: bool = Field(False, description="Keep optimizer states in CPU memory (ZeRO-Offload).")
    offload_parameters: bool = Field(False, description="Keep sharded parameters in CPU memory (ZeRO-Infinity).")


class TrainingConfig(StrictConfig):
    """Fields shared by every recipe. Use `SFTRecipeConfig` or `DPORecipeConfig`."""

    learning_rate: float = Field(2e-5, gt=0.0, lt=1.0, description="Peak AdamW learning rate.")
    num_epochs: float = Field(1.0, gt=0.0, description="Passes over the training set (ignored when max_steps is set).")
    max_steps: int | None = Field(
        None, gt=0, description="Total optimizer steps; overrides num_epochs when set (the data is cycled).")
    per_device_batch_size: int = Field(2, gt=0, description="Examples per device per forward pass.")
    gradient_accumulation_steps: int = Field(
        1, gt=0, description="Forward passes accumulated per optimizer step (effective batch = this × batch size × devices).")
    max_length: int = Field(
        1024, ge=8, description="Longest tokenized prompt+completion; longer sequences lose their end, and "
        "examples whose prompt alone fills it are dropped (shorten prompts beforehand to keep them).")
    seed: int = Field(0, ge=0, description="Seed for weight init of adapters, data order and dropout.")
    shuffle: bool = Field(
        True, description="Shuffle the examples every epoch. False keeps the dataset's order, so related examples "
        "can share a batch (e.g. a pairwise prompt in both orders, which cancels the position bias in each "
        "step); shuffle the dataset beforehand then.")
    group_by_length: bool = Field(
        False, description="Draw batches of similar length (transformers' LengthGroupedSampler, still shuffled), so "
        "little compute goes into padding when lengths vary. Needs shuffle.")
    train_last_layers: int | None = Field(
        None, ge=1, description="Train only the last N transformer blocks, the final norm and any head; the blocks "
        "below and the (tied) embeddings stay frozen, so the backward pass stops N blocks down: a large saving on "
        "CPUs. None = train every weight. Not with lora.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule after warm-up.")
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of the steps spent warming up the learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient clipping norm.")
    lora: LoraSettings | None = Field(
        None, description="Train LoRA adapters instead of all weights (merged before saving); None = full fine-tune.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, slower steps.")
    bf16: Literal["auto"] | StrictBool = Field(
        "auto", description="bfloat16 mixed precision (autocast; the weights stay float32). 'auto' = on where the "
        "hardware runs bf16 natively: a bf16-capable GPU, or a CPU with AVX512-BF16/AMX.")
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="Attention kernel. 'auto' = flash_attention_2 when flash-attn is importable and CUDA "
        "is present, else sdpa.")
    deepspeed: DeepSpeedSettings | None = Field(
        None, description="DeepSpeed ZeRO-3 settings for multi-GPU runs; ignored (with a logged reason) without CUDA.")
    logging_steps: int = Field(1, gt=0, description="Optimizer steps between two loss records (1 = a per-step loss curve).")
    full_determinism: bool = Field(
        False, description="Also force deterministic torch kernels (needed on GPUs; CPU training is already "
        "deterministic given the seed). Changes process-wide torch settings.")

    @model_validator(mode="after")
    def _check_layer_and_length_settings(self):
        if self.group_by_length and not self.shuffle:
            raise ValueError("group_by_length draws shuffled batches of similar length; it needs shuffle: true")
        if self.train_last_layers is not None and self.lora is not None:
            raise ValueError("train_last_layers freezes whole blocks of a full fine-tune; with lora only the "
                             "adapters train anyway. Set one of them")
        return self

    def trainer_arguments(self, output_dir: str, runtime: Runtime) -> dict[str, Any]:
        """Arguments common to `trl.SFTConfig` and `trl.DPOConfig`."""
        return dict(
            output_dir=output_dir,
            learning_rate=self.learning_rate,
            num_train_epochs=self.num_epochs,
            max_steps=self.max_steps if self.max_steps is not None else -1,
            per_device_train_batch_size=self.per_device_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            max_length=self.max_length,
            seed=self.seed,
            data_seed=self.seed,
            train_sampling_strategy=("group_by_length" if self.group_by_length else "random") if self.shuffle
            else "sequential",
            full_determinism=self.full_determinism,
            lr_scheduler_type=self.lr_scheduler,
            warmup_steps=self.warmup_ratio,  # transformers 5 takes a ratio here when the value is < 1
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            # transformers 5 renamed gradient checkpointing; the new name avoids a deprecation warning per run.
            activation_checkpointing=self.gradient_checkpointing,
            bf16=runtime.bf16,
            use_cpu=runtime.device == "cpu",  # transformers refuses bf16 autocast on CPU unless told it is a CPU run
            deepspeed=runtime.deepspeed,
            logging_steps=self.logging_steps,
            logging_first_step=True,
            # The recipe saves the final model itself; intermediate checkpoints would only cost disk and time.
            save_strategy="no",
            report_to="none",
            push_to_hub=False,
            disable_tqdm=True,  # progress goes through `logging` instead (see common.LossRecorder)
            dataloader_num_workers=0,
            dataloader_pin_memory=runtime.device == "cuda",
        )


class SFTRecipeConfig(TrainingConfig):
    """Supervised fine-tuning on (prompt, completion) pairs with the loss on the completion tokens only."""

    def to_trl(self, output_dir: str, runtime: Runtime) -> trl.SFTConfig:
        """The `trl.SFTConfig` for this recipe on the resolved `runtime`."""
        from trl import SFTConfig

        return SFTConfig(
            **self.trainer_arguments(output_dir, runtime),
            completion_only_loss=True,  # the recipe's contract: prompt tokens never contribute to the loss
            packing=False,  # packing would need flash attention to keep examples apart
        )


class DPORecipeConfig(TrainingConfig):
    """Direct Preference Optimization on (prompt, chosen, rejected) triples."""

    learning_rate: float = Field(1e-6, gt=0.0, lt=1.0, description="Peak AdamW learning rate (DPO wants it small; "
                                 "LoRA runs usually need 10-100× more).")
    beta: float = Field(0.1, gt=0.0, description="Strength of the pull towards the reference model (higher = "
                        "smaller deviation); tau for the IPO loss.")
    loss_type: list[DPOLossType] = Field(
        default_factory=lambda: ["sigmoid"],
        description="DPO loss variant(s) from TRL (e.g. 'sigmoid' = original DPO, 'ipo', 'robust'); several are "
        "summed with loss_weights.")
    loss_weights: list[float] | None = Field(
        None, description="Weights of the loss_type entries when several are given; None = all 1.0.")
    precompute_ref_log_probs: bool = Field(
        False, description="Compute the reference log-probabilities once before training, so no reference copy "
        "stays in memory (full fine-tune only; with LoRA the adapter-free model is the reference anyway).")

    @field_validator("loss_type", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _no_length_groups(self):
        if self.group_by_length:
            # TRL's DPOTrainer drops every column but its own before batching, the lengths included.
            raise ValueError("group_by_length is not available for DPO recipes (TRL's DPOTrainer drops the length "
                             "column); set group_by_length: false")
        return self

    @model_validator(mode="after")
    def _weights_match_losses(self):
        if not self.loss_type:
            raise ValueError("loss_type needs at least one DPO loss, e.g. ['sigmoid']")
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(f"loss_weights has {len(self.loss_weights)} values for {len(self.loss_type)} "
                             "loss_type entries; give one weight per loss or leave loss_weights unset")
        return self

    def to_trl(self, output_dir: str, runtime: Runtime) -> trl.DPOConfig:
        """The `trl.DPOConfig` for this recipe on the resolved `runtime`."""
        from trl import DPOConfig

        return DPOConfig(
            **self.trainer_arguments(output_dir, runtime),
            beta=self.beta,
            loss_type=list(self.loss_type),
            loss_weights=list(self.loss_weights) if self.loss_weights is not None else None,
            precompute_ref_log_probs=self.precompute_ref_log_probs,
        )
