"""Stored models as standard Hugging Face directories (safetensors, config, tokenizer, generation config).

- A policy or a generative judge is a causal LM: loaded with `AutoModelForCausalLM` and saved again,
  which drops selfrefine's own files (`judge.json`, a reward head) and writes the standard ones.
- A reward-head judge (`reward_head.RewardHeadModel`: a causal LM plus `reward_head.safetensors`) is
  written as the backbone's `…ForSequenceClassification` with `num_labels=1` and
  `score.weight` = the linear head's weight, so its logit is selfrefine's reward. transformers'
  classification head has no bias. The Bradley–Terry loss gives the head's bias no gradient in exact
  arithmetic (it cancels in r_chosen − r_rejected), but the rounding of those cancelling sums can
  leave a tiny one that Adam's normalisation turns into learning-rate-sized steps, so the bias ends
  near zero, not at it. `config.json` keeps it as `selfrefine_reward_bias`: the logit is the reward
  minus it, a constant that changes no comparison. An `mlp` head has no transformers class and is refused.
- A per-dimension judge is one directory per dimension, each exported by its own kind.

transformers' classifier reads the reward at the rightmost token that is not the pad token, and
selfrefine reads it at the EOS token that ends every input. When the tokenizer pads with EOS, the
export pads with another special token of the vocabulary, so that the EOS is read; inputs are
padded on the right (the positions of the real tokens then match selfrefine's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfrefine.errors import ConfigError, ModelLoadError
from selfrefine.models.judge_info import PER_DIMENSION, read_judge_info, sub_judge_dirs

BIAS_KEY = "selfrefine_reward_bias"


def export_model(source: Path, dest: Path, role: str) -> list[tuple[Path, str]]:
    """Write the model in `source` under `dest`; returns (directory, kind) per directory written,
    kind being `causal_lm` or `sequence_classification`."""
    info = read_judge_info(source) if role == "judge" else {"kind": "generative"}
    if info["kind"] == PER_DIMENSION:
        written = []
        for dim, sub in sub_judge_dirs(source, info).items():
            written += export_model(sub, dest / dim, role)
        return written
    if info["kind"] == "reward_head":
        return [(write_sequence_classifier(source, dest, info), "sequence_classification")]
    return [(write_causal_lm(source, dest), "causal_lm")]


def write_causal_lm(source: Path, dest: Path) -> Path:
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype="auto", use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the causal LM in {source}: {exc}") from exc
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest, safe_serialization=True)
    _save_generation_config(source, dest, model.config)
    _load_tokenizer(source).save_pretrained(dest)
    return dest


def write_sequence_classifier(source: Path, dest: Path, info: dict[str, Any]) -> Path:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    head = info.get("head") or {}
    if head.get("kind") != "linear":
        raise ConfigError(f"{source} has a reward head of kind {head.get('kind')!r}; only a 'linear' head maps onto "
                          "transformers' sequence classifier. Train the judge with reward_recipe.head: linear to export it")
    state = load_file(str(source / "reward_head.safetensors"))
    weight, bias = state["weight"], state.get("bias")
    tokenizer = _load_tokenizer(source)
    pad_id = _pad_token_id(tokenizer)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=1, dtype="auto", use_safetensors=True, pad_token_id=pad_id)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the reward-head judge's backbone from {source} as a sequence "
                             f"classifier: {exc}") from exc
    score = model.score
    with torch.no_grad():
        score.weight.copy_(weight.reshape(score.weight.shape).to(score.weight.dtype))
    model.config.pad_token_id = pad_id
    if model.config.get_text_config() is not model.config:
        model.config.get_text_config().pad_token_id = pad_id
    setattr(model.config, BIAS_KEY, float(bias.reshape(-1)[0]) if bias is not None else 0.0)
    model.config.id2label, model.config.label2id = {0: "reward"}, {"reward": 0}
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(dest)
    return dest


def _pad_token_id(tokenizer: Any) -> int:
    """A pad token that is not EOS (see the module docstring): the tokenizer's own when it differs,
    else the lowest-numbered special token that is neither EOS nor BOS."""
    eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != eos:
        return int(tokenizer.pad_token_id)
    others = sorted(i for i in tokenizer.all_special_ids if i not in (eos, bos))
    if not others:
        raise ModelLoadError("the judge's tokenizer has no special token besides EOS and BOS to pad with; "
                             "the exported classifier would read its reward before the EOS token")
    return int(others[0])


def _save_generation_config(source: Path, dest: Path, config: Any) -> None:
    from transformers import GenerationConfig

    try:
        generation = GenerationConfig.from_pretrained(source)
    except OSError:
        generation = GenerationConfig.from_model_config(config)
    generation.save_pretrained(dest)


def _load_tokenizer(source: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the tokenizer in {source}: {exc}") from exc
