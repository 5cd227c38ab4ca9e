"""A public sequence-classification reward model as a judge (e.g. the Skywork-Reward-V2 family).

The model is an `AutoModelForSequenceClassification` with one label: its logit at the last
non-pad token is the reward r of the whole conversation. It serves as an independent evaluator,
through the same interface as the other judges (`score_absolute`, `compare`), with the same
meaning of the fields as `reward_judge.RewardHeadJudge`: `score` = r, `answer` = "Yes" iff r >= 0,
`p_yes` = sigmoid(r); `compare` gives p_a = sigmoid(r_a − r_b) in both presentation orders
(`consistent` is always true). A generic reward model has no notion of selfrefine's dimensions:
the items' `dimension` is ignored, every dimension gets the model's one reward.

Input: the conversation (context turns + {"role": "assistant", "content": response}) rendered
with the tokenizer's chat template, as these models were trained on. A tokenizer without a chat
template gets a plain rendering, "Human: …\n\nAssistant: …" (system turns as "System: …"), turns
separated by a blank line. Inputs longer than `max_length` tokens lose their oldest tokens (a
leading BOS is kept), so the response's end, where the reward is read, always stays; the number
of truncated inputs is logged once per call and added to `truncated`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from selfrefine.errors import ConfigError, ModelLoadError
from selfrefine.models.judge_types import AbsoluteItem, AbsoluteScore, PairItem, PairVerdict, coerce_item
from selfrefine.models.loading import load_error, load_tokenizer, resolve_device, resolve_dtype, resolve_model
from selfrefine.models.reward_judge import score_from_reward, verdict_from_rewards

logger = logging.getLogger(__name__)

_ROLE_NAMES = {"user": "Human", "assistant": "Assistant", "system": "System"}


def plain_rendering(messages: Sequence[Mapping[str, str]]) -> str:
    """The conversation as "Human: …\n\nAssistant: …", for tokenizers without a chat template."""
    return "\n\n".join(f"{_ROLE_NAMES.get(m['role'], m['role'].capitalize())}: {m['content']}" for m in messages)


def _require_one_label(name: str, num_labels: int | None) -> None:
    if num_labels != 1:
        raise ModelLoadError(f"model '{name}' is a sequence classifier with num_labels={num_labels}; a reward-model "
                             "judge needs exactly one label (a scalar reward). Fix: use a reward model "
                             "(e.g. Skywork-Reward-V2) saved with num_labels=1, not a multi-class classifier")


class SequenceClassifierJudge:
    """Batched scoring with a one-label `AutoModelForSequenceClassification` and its tokenizer."""

    kind = "sequence_classifier"

    def __init__(self, model: Any, tokenizer: Any, dimension_extra: Mapping[str, str] | None = None,
                 batch_size: int = 16, max_length: int = 1024, *, name: str | None = None):
        _require_one_label(name or str(model.config.name_or_path), getattr(model.config, "num_labels", None))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:  # HF reads the reward at the last token that is not padding
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model, self.tokenizer = model, tokenizer
        self.dimension_extra = dict(dimension_extra or {})  # accepted for the common interface; unused
        self.batch_size, self.max_length = batch_size, max_length
        self.name = name or str(model.config.name_or_path)
        self.truncated = 0  # inputs cut to max_length, over the judge's lifetime
        self._known: dict[tuple[int, ...], float] = {}  # reward by token ids; the weights never change

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str, *, dtype: str = "auto", device: str = "auto",
                        dimension_extra: Mapping[str, str] | None = None, batch_size: int = 16,
                        max_length: int = 1024) -> SequenceClassifierJudge:
        from transformers import AutoConfig, AutoModelForSequenceClassification

        path = resolve_model(path_or_hub_id)
        device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, device)
        try:
            config = AutoConfig.from_pretrained(path)
        except Exception as exc:  # OSError, ValueError, hub errors: all mean "cannot load this name"
            raise load_error(path_or_hub_id, path, exc) from exc
        _require_one_label(path_or_hub_id, config.num_labels)  # before loading any weights
        tokenizer = load_tokenizer(path)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(path, config=config, dtype=torch_dtype,
                                                                       use_safetensors=True)
        except Exception as exc:
            raise load_error(path_or_hub_id, path, exc) from exc
        model.to(device).eval()
        return cls(model, tokenizer, dimension_extra, batch_size, max_length, name=path_or_hub_id)

    def describe(self) -> dict[str, str]:
        """The judge's identity: the model name and the judge kind."""
        return {"model": self.name, "kind": self.kind}

    # -- public scoring --

    def render(self, context: Sequence[Mapping[str, str]], response: str) -> str:
        """The conversation as the model reads it (see the module docstring)."""
        messages = [{"role": t["role"], "content": t["content"]} for t in context]
        messages.append({"role": "assistant", "content": response})
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return plain_rendering(messages)

    def encode(self, text: str) -> tuple[list[int], bool]:
        """Token ids of a rendered conversation, cut from the left to `max_length`; and whether cut."""
        bos = self.tokenizer.bos_token
        # A chat template that already writes the BOS token must not get a second one.
        ids = self.tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]
        if len(ids) <= self.max_length:
            return ids, False
        keep_bos = self.tokenizer.bos_token_id is not None and ids[0] == self.tokenizer.bos_token_id
        head = ids[:1] if keep_bos else []
        return head + ids[len(ids) - (self.max_length - len(head)):], True

    def rewards(self, items: Sequence[AbsoluteItem | Mapping]) -> list[float]:
        """The reward of each item, in input order (the dimension is ignored)."""
        items = [coerce_item(i, AbsoluteItem) for i in items]
        encoded = [self.encode(self.render(it.context, it.response)) for it in items]
        cut = sum(was_cut for _, was_cut in encoded)
        if cut:
            self.truncated += cut
            logger.warning("%d of %d inputs exceed max_length=%d tokens; their oldest tokens were cut "
                           "(the responses' ends are kept)", cut, len(items), self.max_length)
        ids = [tuple(seq) for seq, _ in encoded]
        new = list(dict.fromkeys(seq for seq in ids if seq not in self._known))
        self._known.update(zip(new, self._forward([list(seq) for seq in new])))
        return [self._known[seq] for seq in ids]

    def score_absolute(self, items: Sequence[AbsoluteItem | Mapping]) -> list[AbsoluteScore]:
        """score = reward r, answer Yes iff r >= 0, p_yes = sigmoid(r); the dimension is ignored."""
        return [score_from_reward(reward) for reward in self.rewards(items)]

    def compare(self, items: Sequence[PairItem | Mapping]) -> list[PairVerdict]:
        """Bradley–Terry verdicts p_a = sigmoid(r_a − r_b), the same in both orders; dimension ignored."""
        items = [coerce_item(i, PairItem) for i in items]
        flat = [AbsoluteItem(it.context, r, it.dimension) for it in items for r in (it.response_a, it.response_b)]
        rewards = self.rewards(flat)
        return [verdict_from_rewards(r_a, r_b) for r_a, r_b in zip(rewards[0::2], rewards[1::2])]

    def compare_cot(self, *args: Any, **kwargs: Any):
        raise ConfigError("a sequence-classifier reward model gives scores, not chain-of-thought verdicts; use a "
                          "generative judge for rationales")

    # -- internals --

    def _forward(self, sequences: list[list[int]]) -> list[float]:
        """Rewards of token sequences: length-sorted, right-padded batches under inference mode.

        Right padding keeps every position id as in an unpadded pass; the model reads the reward at
        the rightmost token that is not `config.pad_token_id`, which is then the sequence's own end.
        """
        import torch

        device = next(self.model.parameters()).device
        pad = self.model.config.pad_token_id
        rewards = [0.0] * len(sequences)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            width = max(len(sequences[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                input_ids[row, :len(sequences[i])] = torch.tensor(sequences[i], dtype=torch.long)
                mask[row, :len(sequences[i])] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
            for row, value in zip(idx, logits[:, 0].float().tolist()):
                rewards[row] = value
        return rewards
