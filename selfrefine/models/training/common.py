"""What every recipe shares: machine-dependent choices, model loading, the loss record, saving.

`run_recipe` is the one training driver: resolve the runtime, build the TRL config, load the model,
train with the given TRL trainer class, save a plain merged model with its tokenizer and
`training_log.json`, and return a `TrainResult`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from transformers import PrinterCallback, TrainerCallback

from selfrefine.errors import ConfigError, DataError, ModelLoadError
from selfrefine.models.training.config import Runtime, TrainingConfig
from selfrefine.models.training.deepspeed import zero3_config
from selfrefine.models.training.labelled_positions import labelled_positions_only
from selfrefine.progress import Progress

logger = logging.getLogger(__name__)

TRAINING_LOG = "training_log.json"


class TrainResult(BaseModel):
    """What a recipe returns: where the model is and how training went."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    output_dir: str = Field(description="Directory of the saved `save_pretrained` model and tokenizer.")
    loss_history: list[tuple[int, float]] = Field(description="(optimizer step, training loss) at every logging step.")
    steps: int = Field(description="Optimizer steps taken.")
    seconds: float = Field(description="Wall-clock seconds of the training loop (without loading and saving).")
    num_examples: int = Field(description="Training examples used, after dropping those that do not fit max_length.")
    num_truncated: int = Field(0, description="Training examples cut to fit max_length (recipes that cut "
                                              "instead of dropping).")


def resolve_runtime(config: TrainingConfig) -> Runtime:
    """Resolve bf16, the attention kernel and DeepSpeed for this machine, logging every fallback.

    Raises `ConfigError` for an explicit choice the machine cannot honour (bf16 or flash attention
    without a suitable GPU), rather than silently training differently from what was asked.
    """
    import torch

    from selfrefine.models.loading import bf16_supported

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if config.bf16 == "auto":
        bf16 = bf16_supported(device)
    else:
        bf16 = config.bf16
        if bf16 and cuda and not torch.cuda.is_bf16_supported():
            raise ConfigError("training.bf16 is true but this GPU has no bfloat16 support; set bf16: auto or false")

    flash_installed = importlib.util.find_spec("flash_attn") is not None
    if config.attn_implementation == "auto":
        attn = "flash_attention_2" if cuda and flash_installed else "sdpa"
    else:
        attn = config.attn_implementation
        if attn == "flash_attention_2" and not (cuda and flash_installed):
            raise ConfigError("training.attn_implementation is flash_attention_2 but "
                              + ("flash-attn is not installed (pip install 'selfrefine[gpu]')" if cuda
                                 else "there is no CUDA GPU") + "; use 'auto' or 'sdpa'")

    deepspeed = None
    if config.deepspeed is not None:
        if cuda:
            deepspeed = zero3_config(config.deepspeed)
        else:
            logger.info("DeepSpeed ZeRO-3 is configured but there is no CUDA GPU: training without DeepSpeed")
    runtime = Runtime(device=device, bf16=bf16, attn_implementation=attn, deepspeed=deepspeed)
    logger.info("training runtime: device=%s bf16=%s attention=%s deepspeed=%s", runtime.device, runtime.bf16,
                runtime.attn_implementation, "zero3" if deepspeed else "off")
    return runtime


def check_text_columns(dataset, columns: tuple[str, ...], what: str) -> None:
    """Fail early, naming the row and field, unless every row has a non-empty string in each column."""
    from datasets import Dataset

    if not isinstance(dataset, Dataset):
        raise DataError(f"{what} must be a datasets.Dataset with columns {list(columns)}, "
                        f"got {type(dataset).__name__}")
    missing = [name for name in columns if name not in dataset.column_names]
    if missing:
        raise DataError(f"{what} lack column(s) {missing}; they have {dataset.column_names}", field=missing[0])
    if len(dataset) == 0:
        raise DataError(f"{what} are empty; a recipe needs at least one example")
    for name in columns:
        for row, value in enumerate(dataset[name], start=1):
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{what}: row {row} has {'an empty' if isinstance(value, str) else 'a non-text'} "
                                f"value; every row needs text", line=row, field=name)


def prepare_output_dir(output_dir: str | Path) -> Path:
    """Create the output directory; refuse one that already holds files, so no stale weights mix in."""
    path = Path(output_dir)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"output directory {path} already exists and is not empty; pass a new directory "
                          "(recipes never overwrite a checkpoint)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_for_training(base_model: str, runtime: Runtime):
    """Load (model, tokenizer, local model dir) for training; float32 weights, mixed precision comes from the trainer."""
    import torch
    from transformers import AutoModelForCausalLM

    from selfrefine.models.loading import load_tokenizer, resolve_model

    model_dir = resolve_model(base_model)
    tokenizer = load_tokenizer(base_model)  # raises ModelLoadError with the fix for a bad name
    # Not `loading.load_model`: the trainer places the model itself (DeepSpeed must not see it moved
    # to one GPU first), and it is loaded after the TRL config exists, so that under ZeRO-3
    # transformers shards the weights while loading instead of materialising them on every rank.
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True,
                                                     attn_implementation=runtime.attn_implementation)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load base model '{base_model}' ({model_dir}) for training: {exc}. Fix: pass "
                             "an alias (packaged, tiny) or a save_pretrained directory with safetensors weights") from exc
    return model, tokenizer, model_dir


class LossRecorder(TrainerCallback):
    """Logs step, loss and examples/s through `logging` at every trainer log event, and the
    training's progress in optimizer steps (see `selfrefine.progress`)."""

    def __init__(self, recipe: str):
        self.recipe = recipe
        self._last_time = 0.0
        self._last_step = 0
        self._progress: Progress | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_time, self._last_step = time.perf_counter(), 0
        self._progress = Progress(f"{self.recipe} training", state.max_steps, "steps")

    def on_step_end(self, args, state, control, **kwargs):
        if self._progress is not None:
            self._progress.update(1)

    def on_train_end(self, args, state, control, **kwargs):
        if self._progress is not None:
            self._progress.close()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        now = time.perf_counter()
        examples = ((state.global_step - self._last_step) * args.per_device_train_batch_size
                    * args.gradient_accumulation_steps * args.world_size)
        rate = examples / (now - self._last_time) if now > self._last_time else 0.0
        self._last_time, self._last_step = now, state.global_step
        logger.info("%s step %d/%d loss %.4f (%.2f examples/s)", self.recipe, state.global_step, state.max_steps,
                    logs["loss"], rate)


def loss_history(log_history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(step, loss) pairs from a trainer's `state.log_history` (the final summary entry has no 'loss')."""
    return [(int(entry["step"]), float(entry["loss"])) for entry in log_history if "loss" in entry and "step" in entry]


def save_trained_model(trainer, tokenizer, output_dir: Path, base_model_dir: str) -> None:
    """Save a plain model (LoRA adapters merged) and the tokenizer as safetensors `save_pretrained` files."""
    from accelerate.utils import is_peft_model

    if trainer.is_deepspeed_enabled:
        _save_from_deepspeed(trainer, tokenizer, output_dir, base_model_dir)
        return
    if not trainer.accelerator.is_main_process:  # data-parallel ranks hold identical weights; one writes them
        trainer.accelerator.wait_for_everyone()
        return
    model = trainer.accelerator.unwrap_model(trainer.model)
    if is_peft_model(model):
        # Downstream stages load a plain model; a merged copy needs no peft at inference.
        model = model.merge_and_unload()
    model.config.use_cache = True  # training turns the KV cache off; generation wants it back
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    trainer.accelerator.wait_for_everyone()


def _save_from_deepspeed(trainer, tokenizer, output_dir: Path, base_model_dir: str) -> None:
    # ZeRO-3 shards the weights across ranks: `save_model` gathers them (stage3_gather_16bit_weights_on_model_save).
    # A LoRA run saves only the adapter that way, so the main process merges it into a fresh base model copy.
    from accelerate.utils import is_peft_model
    from transformers import AutoModelForCausalLM

    peft_run = is_peft_model(trainer.accelerator.unwrap_model(trainer.model))
    target = output_dir / "adapter" if peft_run else output_dir
    trainer.save_model(str(target))
    if trainer.accelerator.is_main_process:
        if peft_run:
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(base_model_dir, use_safetensors=True)
            merged = PeftModel.from_pretrained(base, str(target)).merge_and_unload()
            merged.save_pretrained(output_dir)
            shutil.rmtree(target)
        tokenizer.save_pretrained(output_dir)
    trainer.accelerator.wait_for_everyone()


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
            "peft": peft.__version__}


def _by_name(model: str | Path) -> str:
    """A local model directory by its last path component; aliases and hub ids unchanged."""
    path = Path(model)
    return path.name if path.is_dir() else str(model)


def freeze_lower_layers(model, train_last: int) -> int:
    """Freeze every weight of `model` but the last `train_last` transformer blocks, what follows them
    (final norm, heads that are not tied to the embeddings) and anything outside the backbone (a
    reward head). Returns the number of trainable parameters left.

    The blocks are the model's longest `ModuleList` (`model.layers` in Llama-style models); the
    embeddings, and an LM head tied to them, stay frozen.
    """
    import torch.nn as nn

    blocks = max((m for m in model.modules() if isinstance(m, nn.ModuleList)), key=len, default=None)
    if blocks is None or len(blocks) < train_last:
        raise ConfigError(f"train_last_layers={train_last}, but the model has "
                          f"{len(blocks) if blocks is not None else 0} transformer blocks; use at most that many")
    frozen = {id(p) for block in list(blocks)[:len(blocks) - train_last] for p in block.parameters()}
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            frozen.update(id(p) for p in module.parameters())
    for p in model.parameters():  # shared (tied) tensors appear once here, under their first name
        p.requires_grad_(id(p) not in frozen)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def run_recipe(recipe: str, trainer_class, base_model: str, dataset, output_dir: str | Path,
               config: TrainingConfig, *, wrap_model=None) -> TrainResult:
    """Train `base_model` on `dataset` with `trainer_class` (a TRL trainer) and save the result in `output_dir`.

    `wrap_model(model, model_dir)`, if given, turns the loaded causal LM into the model the trainer
    trains (e.g. one with a reward head); it must save itself with `save_pretrained`. A trainer
    with a `training_log_extras()` method adds its fields to `training_log.json`.
    """
    output_path = prepare_output_dir(output_dir)
    runtime = resolve_runtime(config)
    args = config.to_trl(str(output_path), runtime)
    model, tokenizer, model_dir = load_for_training(base_model, runtime)
    if wrap_model is not None:
        model = wrap_model(model, model_dir)
    if config.train_last_layers is not None:
        trainable = freeze_lower_layers(model, config.train_last_layers)
        logger.info("%s: training the last %d blocks only (%.1f M trainable parameters)", recipe,
                    config.train_last_layers, trainable / 1e6)
    trainer = trainer_class(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                            peft_config=config.lora.to_peft() if config.lora else None,
                            callbacks=[LossRecorder(recipe)])
    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts to stdout; LossRecorder logs instead
    num_examples = len(trainer.train_dataset)
    if num_examples < len(dataset):
        logger.warning("%s: %d of %d examples dropped because their prompt fills max_length=%d", recipe,
                       len(dataset) - num_examples, len(dataset), config.max_length)
    if num_examples == 0:
        raise DataError(f"{recipe}: every example's prompt is longer than max_length={config.max_length} tokens; "
                        "raise training.max_length or shorten the prompts")
    logger.info("%s: training %s on %d examples for %s", recipe, base_model, num_examples,
                f"{config.max_steps} steps" if config.max_steps else f"{config.num_epochs:g} epoch(s)")

    start = time.perf_counter()
    with labelled_positions_only():  # TRL would score every position's logits on CPUs (see the module)
        trainer.train()
    seconds = time.perf_counter() - start

    save_trained_model(trainer, tokenizer, output_path, model_dir)
    result = TrainResult(output_dir=str(output_path), loss_history=loss_history(trainer.state.log_history),
                         steps=trainer.state.global_step, seconds=round(seconds, 3), num_examples=num_examples)
    # The log is part of the saved model, so it holds only what determines the model: no wall time,
    # no output path and base model directories by name only (an artifact's name is its digest).
    # Otherwise the same training would make different bytes in every store and on every rerun.
    record = {"recipe": recipe, "base_model": _by_name(base_model), "base_model_dir": _by_name(model_dir),
              "config": config.model_dump(mode="json"), "runtime": asdict(runtime) | {"deepspeed": bool(runtime.deepspeed)},
              "versions": _versions(), **result.model_dump(mode="json", exclude={"output_dir", "seconds"})}
    if hasattr(trainer, "training_log_extras"):
        record.update(trainer.training_log_extras())
    if trainer.accelerator.is_main_process:
        (output_path / TRAINING_LOG).write_text(json.dumps(record, indent=2) + "\n")
    logger.info("%s: %d steps in %.1f s, final loss %s, saved to %s", recipe, result.steps, seconds,
                f"{result.loss_history[-1][1]:.4f}" if result.loss_history else "n/a", output_path)
    return result
