"""A causal LM with a scalar reward head on its last token: the model of the `reward_head` judge.

The language-model head is kept, not replaced: GRM regularises the shared hidden states with a
text-generation loss through it, and the saved directory stays a complete causal-LM checkpoint
that generation, the policy stage and `check_model` use as is. The head is one more file:

    config.json, model.safetensors, tokenizer files   backbone + LM head (`save_pretrained`)
    reward_head.safetensors                           the head's weights
    judge.json                                        {"kind": "reward_head", "head": {...},
                                                       "input_format": ...}

The reward of a sequence is the head applied to the hidden state of its last real token (found
from the attention mask, so left and right padding both work).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from transformers.utils import ModelOutput

from selfrefine.errors import ConfigError, ModelLoadError
from selfrefine.models.judge_info import RewardInputFormat, read_judge_info, reward_input_format, write_judge_info

HEAD_FILE = "reward_head.safetensors"
HeadKind = Literal["linear", "mlp"]


@dataclass(frozen=True)
class HeadSpec:
    """Shape of a reward head: `linear` (hidden → 1) or `mlp` (hidden → mlp_size → ReLU → 1, GRM's default)."""

    kind: HeadKind
    hidden_size: int
    mlp_size: int = 1024

    def build(self, generator: torch.Generator | None = None, std: float = 0.02) -> nn.Module:
        """A freshly initialised head; `generator` makes the initial weights reproducible."""
        if self.kind == "linear":
            head = nn.Linear(self.hidden_size, 1)
        elif self.kind == "mlp":
            head = nn.Sequential(nn.Linear(self.hidden_size, self.mlp_size), nn.ReLU(), nn.Linear(self.mlp_size, 1))
        else:
            raise ConfigError(f"reward head kind must be 'linear' or 'mlp', got {self.kind!r}")
        with torch.no_grad():
            for module in head.modules():
                if isinstance(module, nn.Linear):
                    # The initializer range of the backbone, as transformers initialises its own heads.
                    module.weight.normal_(0.0, std, generator=generator)
                    module.bias.zero_()
        return head


@dataclass
class RewardHeadOutput(ModelOutput):
    """`logits`: rewards, shape (batch, 1), as TRL's RewardTrainer expects from a sequence classifier;
    `hidden_states`: the last layer's hidden states (batch, length, hidden); `features`: the head's
    inputs, the last real token's hidden state (batch, hidden)."""

    logits: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None
    features: torch.Tensor | None = None


def causal_lm(lm: Any) -> Any:
    """The transformers causal LM inside `lm` (itself, or the model under a peft adapter)."""
    from accelerate.utils import is_peft_model

    return lm.get_base_model() if is_peft_model(lm) else lm


def last_hidden_states(lm: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last-layer hidden states of a causal LM (LoRA layers included), without the vocabulary projection."""
    # Positions count real tokens only, so a left-padded row sees the positions it would alone.
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = causal_lm(lm).base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                                   use_cache=False)
    return out.last_hidden_state


def response_logprobs(lm: Any, hidden: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor
                      ) -> torch.Tensor:
    """Summed log-probability of the tokens marked in `response_mask`, per sequence: log π(y | x).

    Only the positions predicting a marked token go through the vocabulary projection, so memory
    grows with the response length, not with batch × length × vocabulary.
    """
    rows, cols = response_mask[:, 1:].nonzero(as_tuple=True)  # token cols+1 is predicted at cols
    logits = causal_lm(lm).get_output_embeddings()(hidden[rows, cols]).float()
    targets = input_ids[rows, cols + 1]
    token_lp = logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
    return torch.zeros(input_ids.shape[0], device=token_lp.device, dtype=token_lp.dtype).index_add(0, rows, token_lp)


class RewardHeadModel(nn.Module):
    """A causal LM (`lm`, optionally with a peft adapter) and a reward `head` sharing its hidden states.

    In ODIN training a second linear head, `length_head`, reads the same features; the trainer adds
    it to the reward in its loss. The model's output and everything saved are the `head` alone.
    """

    def __init__(self, lm: Any, head: nn.Module, spec: HeadSpec, input_format: RewardInputFormat = "plain",
                 length_head: nn.Module | None = None):
        super().__init__()
        self.lm, self.head, self.spec = lm, head, spec
        self.length_head = length_head
        self.input_format = input_format  # the layout its inputs are rendered in (reward_judge.reward_input)
        # TRL's RewardTrainer checks num_labels == 1 and sets the pad token on `model.config`. A
        # copy keeps that off the LM's own config.json; the LM keeps its pad token from loading.
        self.config = copy.copy(causal_lm(lm).config)
        self.config.num_labels = 1

    # -- construction and saving --

    @classmethod
    def for_training(cls, lm: Any, model_dir: str | Path, kind: HeadKind, mlp_size: int, seed: int,
                     input_format: RewardInputFormat = "plain", *, length_head: bool = False) -> RewardHeadModel:
        """Wrap a freshly loaded LM: continue the head saved in `model_dir` if there is one (a previous
        reward-head judge, read in the same `input_format`), else start a new head initialised from `seed`.
        `length_head` adds ODIN's second linear head, always new (it is never saved)."""
        model = cls._with_reward_head(lm, model_dir, kind, mlp_size, seed, input_format)
        if length_head:
            generator = torch.Generator().manual_seed(seed + 1)
            std = getattr(lm.config.get_text_config(), "initializer_range", 0.02)
            model.length_head = HeadSpec("linear", model.spec.hidden_size).build(generator, std)
        return model

    @classmethod
    def _with_reward_head(cls, lm: Any, model_dir: str | Path, kind: HeadKind, mlp_size: int, seed: int,
                          input_format: RewardInputFormat) -> RewardHeadModel:
        spec = HeadSpec(kind=kind, hidden_size=lm.config.get_text_config().hidden_size, mlp_size=mlp_size)
        info = read_judge_info(model_dir)
        if info["kind"] == "reward_head":
            saved = HeadSpec(**info["head"])
            if saved != spec:
                raise ConfigError(f"{model_dir} holds a reward head {asdict(saved)}, but the recipe asks for "
                                  f"{asdict(spec)}; use the same head settings to continue it, or train from the base model")
            saved_format = reward_input_format(info, model_dir)
            if saved_format != input_format:
                raise ConfigError(f"{model_dir} holds a reward head trained on input_format {saved_format!r}, but the "
                                  f"recipe asks for {input_format!r}; use the same input_format to continue it, or "
                                  "train from the base model")
            return cls(lm, _load_head(Path(model_dir), saved), saved, input_format)
        generator = torch.Generator().manual_seed(seed)
        std = getattr(lm.config.get_text_config(), "initializer_range", 0.02)
        return cls(lm, spec.build(generator, std), spec, input_format)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: torch.dtype = torch.float32, device: str = "cpu") -> RewardHeadModel:
        """Load a saved reward-head judge for scoring (eval mode). The head stays float32: it is tiny."""
        from transformers import AutoModelForCausalLM

        path = Path(path)
        info = read_judge_info(path)
        if info["kind"] != "reward_head":
            raise ModelLoadError(f"{path} is a {info['kind']} judge, not a reward-head judge; load it with load_judge")
        spec = HeadSpec(**info["head"])
        try:
            lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the reward-head judge's backbone from {path}: {exc}") from exc
        model = cls(lm, _load_head(path, spec), spec, reward_input_format(info, path)).to(device)
        return model.eval()

    def save_pretrained(self, output_dir: str | Path, **kwargs: Any) -> None:
        """The backbone as a plain causal LM (adapters merged), the head's safetensors and judge.json."""
        from accelerate.utils import is_peft_model
        from safetensors.torch import save_file

        output_dir = Path(output_dir)
        lm = self.lm.merge_and_unload() if is_peft_model(self.lm) else self.lm
        lm.save_pretrained(output_dir, **kwargs)
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.head.state_dict().items()}
        save_file(state, str(output_dir / HEAD_FILE))
        write_judge_info(output_dir, "reward_head", head=asdict(self.spec), input_format=self.input_format)

    # -- what TRL's RewardTrainer and transformers' Trainer call on a model --

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                use_cache: bool = False, margin: torch.Tensor | None = None) -> RewardHeadOutput:
        # TRL's RewardTrainer hands the whole batch to the model, a pair margin included; only its loss
        # reads the margin, so the forward pass ignores it.
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = last_hidden_states(self.lm, input_ids, attention_mask)
        width = attention_mask.shape[1]
        last = width - 1 - attention_mask.flip(-1).argmax(-1)  # last real token, whichever side is padded
        features = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        rewards = self.head(features.to(self.head_dtype))
        return RewardHeadOutput(logits=rewards, hidden_states=hidden, features=features)

    @property
    def head_dtype(self) -> torch.dtype:
        return next(self.head.parameters()).dtype

    def add_model_tags(self, tags: list[str] | str) -> None:
        causal_lm(self.lm).add_model_tags(tags)

    def activation_checkpointing_enable(self, **kwargs: Any) -> None:
        causal_lm(self.lm).activation_checkpointing_enable(**kwargs)


def _load_head(path: Path, spec: HeadSpec) -> nn.Module:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    head = spec.build()
    try:
        head.load_state_dict(load_file(str(path / HEAD_FILE)))
    except (OSError, SafetensorError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot read the reward head {path / HEAD_FILE} ({exc}); the judge directory is "
                             "incomplete or corrupted: train the judge again") from exc
    return head
