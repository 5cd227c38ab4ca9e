"""The generated DeepSpeed ZeRO-3 config for GPU training runs.

Values marked "auto" are filled in by the transformers Trainer from the TRL config (batch sizes,
gradient accumulation and clipping, precision), so the two can never disagree. DeepSpeed itself is
an optional dependency (`pip install selfrefine[gpu]`) and is only imported to check it is there.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from selfrefine.errors import ConfigError
from selfrefine.models.training.config import DeepSpeedSettings


def deepspeed_installed() -> bool:
    """Whether the `deepspeed` package can be imported (without importing it)."""
    return importlib.util.find_spec("deepspeed") is not None


def zero3_config(settings: DeepSpeedSettings) -> dict[str, Any]:
    """A ZeRO-3 config dict for `TrainingArguments(deepspeed=...)`.

    Raises `ConfigError` when DeepSpeed is not installed, since a GPU run that asked for sharding
    would otherwise run out of memory much later with a less helpful message.
    """
    if not deepspeed_installed():
        raise ConfigError("DeepSpeed ZeRO-3 was requested (training.deepspeed) but the deepspeed package is not "
                          "installed; install the GPU extra (`pip install 'selfrefine[gpu]'`) or set deepspeed: null")

    def offload(enabled: bool) -> dict[str, Any]:
        return {"device": "cpu", "pin_memory": True} if enabled else {"device": "none"}

    return {
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": {
            "stage": 3,
            "offload_optimizer": offload(settings.offload_optimizer),
            "offload_param": offload(settings.offload_parameters),
            "overlap_comm": True,
            "contiguous_gradients": True,
            "reduce_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "sub_group_size": 1_000_000_000,
            "stage3_max_live_parameters": 1_000_000_000,
            "stage3_max_reuse_distance": 1_000_000_000,
            # The recipe saves one consolidated model; without this ZeRO-3 would save only shards.
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "wall_clock_breakdown": False,
    }
