"""Supervised fine-tuning on (prompt, completion) examples with the loss on the completion only.

Used for the judge (Chain-of-Hindsight texts, evaluation prompts with their answer tokens, kept
STaR rationales) and for the rejection-sampling round of the policy (best-of-N responses).
TRL's `SFTTrainer` does the work: for a prompt-completion dataset it tokenizes prompt+completion,
appends the EOS token to the completion, and sets the labels of the prompt tokens to -100, so only
completion tokens (and the EOS) carry loss.
"""

from __future__ import annotations

from pathlib import Path

from selfrefine.models.training.common import TrainResult, check_text_columns, run_recipe
from selfrefine.models.training.config import SFTRecipeConfig

SFT_COLUMNS = ("prompt", "completion")


def train_sft(base_model: str, examples, output_dir: str | Path, config: SFTRecipeConfig | None = None) -> TrainResult:
    """Fine-tune `base_model` on `examples` (a `datasets.Dataset` with text columns `prompt`, `completion`).

    `base_model` is a model alias (`packaged`, `tiny`) or a local `save_pretrained` directory. The prompt
    should end where the completion's first token starts (e.g. "…Answer:" + " Yes"), so the boundary
    falls between tokens. Saves a plain model, its tokenizer and `training_log.json` in `output_dir`
    (which must be new or empty). Raises `DataError` for missing or empty fields and `ConfigError` for
    settings the machine cannot honour.
    """
    from trl import SFTTrainer

    config = config or SFTRecipeConfig()
    check_text_columns(examples, SFT_COLUMNS, "SFT examples")
    return run_recipe("sft", SFTTrainer, base_model, examples.select_columns(list(SFT_COLUMNS)), output_dir, config)
