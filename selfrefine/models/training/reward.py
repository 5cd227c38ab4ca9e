"""The reward-head recipe: a scalar head on the judge's backbone, trained on preference pairs.

`reward_rows` renders `PreferencePair`s as the head reads them (`reward_judge.reward_input`);
`train_reward_head` tokenises them exactly as the judge does when scoring, trains with
`RegularizedRewardTrainer` (TRL's RewardTrainer; GRM, MORE and ODIN when configured) and saves a
reward-head judge directory (see `reward_head`) with its `training_log.json`, which also records
the preference sources and, with MORE, the λ of every batch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from selfrefine.errors import ConfigError, DataError
from selfrefine.models.judge_info import RewardInputFormat
from selfrefine.models.training.common import TrainResult, check_text_columns, run_recipe
from selfrefine.models.training.reward_config import RewardRecipeConfig

logger = logging.getLogger(__name__)
REWARD_COLUMNS = ("prompt", "chosen", "rejected")
DEFAULT_SOURCE = "all"


def reward_rows(pairs: Sequence[Any], tokenizer: Any, max_length: int,
                extra_dimensions: Mapping[str, str] | None = None,
                input_format: RewardInputFormat = "plain", margin_per_gap: float = 0.0
                ) -> tuple[list[dict[str, Any]], int]:
    """Rows {prompt, chosen, rejected, source} for `train_reward_head` from `PreferencePair`s, and
    how many context turns were cut. Both responses follow the same prompt, fitted around the
    longer of the two and rendered in `input_format` (the recipe's). With `margin_per_gap` > 0 each
    row also has `margin`: that times the pair's `gap` (0 for a pair without one)."""
    from selfrefine.models.dimensions import get_dimension
    from selfrefine.models.reward_judge import RESPONSE_PREFIX, reward_input

    rows, turns_cut, space = [], 0, RESPONSE_PREFIX.get(input_format, "")
    for pair in pairs:
        longer = max((pair.chosen, pair.rejected), key=lambda r: len(tokenizer(r, add_special_tokens=False)["input_ids"]))
        fitted = reward_input(pair.context, longer, get_dimension(pair.dimension, extra_dimensions), tokenizer,
                              max_length, input_format=input_format)
        turns_cut += fitted.turns_cut
        rows.append({"prompt": fitted.prompt, "chosen": space + pair.chosen, "rejected": space + pair.rejected,
                     "source": pair.source})
        if margin_per_gap > 0:
            rows[-1]["margin"] = margin_per_gap * (pair.gap or 0.0)
    return rows, turns_cut


def tokenize_pairs(pairs, tokenizer, max_length: int | None = None) -> tuple[Any, list[str], int]:
    """The trainer's dataset (chosen_ids, rejected_ids, prompt_len, source_index, and margin when the
    pairs have that column), the source names by index (sorted; one 'all' source when the pairs have
    no `source` column), and how many pairs had a response cut at its tail to fit `max_length` (none
    is dropped)."""
    from datasets import Dataset

    from selfrefine.models.reward_judge import encode_reward_input

    sources = pairs["source"] if "source" in pairs.column_names else [DEFAULT_SOURCE] * len(pairs)
    names = sorted(set(sources))
    index = {name: i for i, name in enumerate(names)}
    # `length` (the longer sequence of the pair) lets group_by_length batch pairs of similar size.
    columns: dict[str, list] = {"chosen_ids": [], "rejected_ids": [], "prompt_len": [], "source_index": [], "length": []}
    truncated = 0
    for row, source in zip(pairs, sources):
        chosen, prompt_len = encode_reward_input(tokenizer, row["prompt"], row["chosen"])
        rejected, _ = encode_reward_input(tokenizer, row["prompt"], row["rejected"])
        if max_length is not None and max(len(chosen), len(rejected)) > max_length:
            truncated += 1
            chosen, _ = encode_reward_input(tokenizer, row["prompt"], row["chosen"], max_length)
            rejected, _ = encode_reward_input(tokenizer, row["prompt"], row["rejected"], max_length)
        columns["chosen_ids"].append(chosen)
        columns["rejected_ids"].append(rejected)
        columns["prompt_len"].append(prompt_len)
        columns["source_index"].append(index[source])
        columns["length"].append(max(len(chosen), len(rejected)))
    if "margin" in pairs.column_names:  # TRL's collator and loss read it by this name
        columns["margin"] = [float(m) for m in pairs["margin"]]
    return Dataset.from_dict(columns), names, truncated


def train_reward_head(base_model: str, pairs, output_dir: str | Path,
                      config: RewardRecipeConfig | None = None) -> TrainResult:
    """Train a reward-head judge from `base_model` on `pairs` and save it in `output_dir` (new or empty).

    `pairs` is a `datasets.Dataset` with text columns prompt, chosen, rejected (as `reward_rows`
    makes them: the response text follows the prompt directly), for MORE source, and optionally a
    numeric margin (the Bradley–Terry margin of each pair, `reward_rows` with margin_per_gap). A base
    model that is already a reward-head judge continues with its head. Raises `DataError` for
    missing or empty fields and `ConfigError` for settings that cannot work.
    """
    from selfrefine.models.loading import load_tokenizer
    from selfrefine.models.training.reward_trainer import RegularizedRewardTrainer

    config = config or RewardRecipeConfig()
    check_text_columns(pairs, REWARD_COLUMNS + (("source",) if "source" in pairs.column_names else ()),
                       "reward pairs")
    if config.deepspeed is not None:
        import torch

        if torch.cuda.is_available():
            raise ConfigError("the reward-head recipe does not support DeepSpeed ZeRO-3 yet (its head is saved "
                              "beside the backbone); set deepspeed: null and use LoRA to fit the model")
    dataset, names, truncated = tokenize_pairs(pairs, load_tokenizer(base_model), config.max_length)
    if truncated:
        logger.warning("reward_head: %d of %d pairs had a response longer than max_length=%d; they train on "
                       "its first tokens", truncated, len(dataset), config.max_length)
    if config.more is not None and len(names) < 2:
        raise DataError(f"MORE reweights preference sources, but all pairs come from {names}; give pairs from "
                        "two or more sources (the `source` column) or set more: null")
    trainer = partial(RegularizedRewardTrainer, grm=config.grm, more=config.more, odin=config.odin,
                      source_names=names)
    wrap = partial(_with_head, config=config)
    result = run_recipe("reward_head", trainer, base_model, dataset, output_dir, config, wrap_model=wrap)
    return result.model_copy(update={"num_truncated": truncated})


def _with_head(model, model_dir: str, *, config: RewardRecipeConfig):
    from selfrefine.models.reward_head import RewardHeadModel

    return RewardHeadModel.for_training(model, model_dir, config.head, config.head_size, config.seed,
                                        config.input_format, length_head=config.odin is not None)
