"""TRL's RewardTrainer for the reward-head judge, with GRM regularisation and MORE reweighting.

The reward loss is TRL's own: `RewardTrainer.compute_loss` runs the forward pass and returns the
Bradley–Terry loss −log σ(r_chosen − r_rejected) averaged over the batch (plus TRL's metrics).
On top of it:

- MORE replaces that average by Σ_s λ_s · mean over source s of the same per-pair loss, with λ
  from `min_norm.min_norm_weights` on the per-source gradients of the reward head's parameters
  only (computed on the detached last-token features, so the backbone is not differentiated K
  times). A `SourceBalancedSampler` puts every source in every batch.
- GRM adds the regulariser through the kept LM head: loss = (1 − α)·reward loss + α·regulariser.
- ODIN takes the Bradley–Terry loss on r_Q + r_L (the model's `length_head` on the same features)
  and adds its length-correlation and orthogonality terms (`odin_loss`); the saved judge keeps r_Q.

The batch carries two fields besides TRL's: `response_mask` (the response and EOS tokens of each
sequence, for log π(y|x)) and `source_index` (per pair).
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import is_peft_model
from trl import RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference

from selfrefine.errors import ConfigError
from selfrefine.models.reward_head import last_hidden_states, response_logprobs
from selfrefine.models.training.min_norm import min_norm_weights
from selfrefine.models.training.reward_config import GRMSettings, MORESettings, ODINSettings


def bradley_terry_losses(rewards_chosen: torch.Tensor, rewards_rejected: torch.Tensor,
                         margin: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pair Bradley–Terry loss, −log σ(r_c − r_r − margin): the loss TRL's RewardTrainer averages."""
    return -F.logsigmoid(rewards_chosen - rewards_rejected - (0.0 if margin is None else margin))


def pearson(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of two 1-D tensors (0 when either is constant), differentiable."""
    x, y = x - x.mean(), y - y.mean()
    return (x * y).sum() / (x.norm() * y.norm() + eps)


def odin_loss(quality: torch.Tensor, length_reward: torch.Tensor, lengths: torch.Tensor, quality_weight: torch.Tensor,
              length_weight: torch.Tensor, settings: ODINSettings, margin: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ODIN's loss (see `ODINSettings`) and its parts. `quality`, `length_reward` and `lengths` hold the
    chosen responses, then the rejected ones (TRL's batch layout); the weights are the two heads'."""
    chosen, rejected = torch.chunk(quality + length_reward, chunks=2)
    ranking = bradley_terry_losses(chosen, rejected, margin).mean()
    lengths = lengths.to(quality.dtype)
    rho_quality, rho_length = pearson(quality, lengths), pearson(length_reward, lengths)
    orthogonality = (quality_weight.flatten() * length_weight.flatten()).sum().abs()
    loss = ranking + settings.length_weight * (rho_quality.abs() - rho_length) + settings.orthogonal_weight * orthogonality
    return loss, {"ranking_loss": ranking, "length_corr_quality": rho_quality, "length_corr_length": rho_length,
                  "orthogonality": orthogonality}


def grm_loss(reward_loss: torch.Tensor, regularizer: torch.Tensor, alpha: float) -> torch.Tensor:
    """GRM's total loss (eq. 4): (1 − α)·reward loss + α·regulariser."""
    return (1.0 - alpha) * reward_loss + alpha * regularizer


def grm_regularizer(kind: str, beta: float, chosen_logp: torch.Tensor, rejected_logp: torch.Tensor | None = None,
                    ref_chosen_logp: torch.Tensor | None = None, ref_rejected_logp: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """GRM's regularisers (eqs. 8–10) from summed response log-probabilities, averaged over pairs."""
    if kind == "sft":
        return -F.logsigmoid(beta * chosen_logp).mean()
    if kind == "dpo_noref":
        return -F.logsigmoid(beta * (chosen_logp - rejected_logp)).mean()
    if kind == "dpo":
        return -F.logsigmoid(beta * ((chosen_logp - ref_chosen_logp) - (rejected_logp - ref_rejected_logp))).mean()
    raise ValueError(f"unknown GRM regularizer {kind!r}; use 'sft', 'dpo' or 'dpo_noref'")


@dataclass
class PreferenceCollatorWithResponses(DataCollatorForPreference):
    """TRL's preference collator (chosen rows, then rejected rows, right-padded) plus `response_mask`
    (1 on each sequence's response and EOS tokens, from its `prompt_len`) and `source_index`."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        lengths = torch.tensor([len(e["chosen_ids"]) for e in examples] + [len(e["rejected_ids"]) for e in examples])
        starts = torch.tensor([e["prompt_len"] for e in examples] * 2)
        positions = torch.arange(batch["input_ids"].shape[1])
        batch["response_mask"] = ((positions >= starts[:, None]) & (positions < lengths[:, None])).long()
        batch["source_index"] = torch.tensor([e["source_index"] for e in examples])
        return batch


class SourceBalancedSampler(torch.utils.data.Sampler):
    """Index order in which every consecutive `batch_size` chunk holds pairs of every source (MORE).

    Each batch gives the sources equal slots (the remainder rotating); a source that runs out
    starts over (re-shuffled), so small sources are resampled, as in the MORE paper. An epoch has
    as many batches as plain batching would.
    """

    def __init__(self, source_index: Sequence[int], batch_size: int, *, seed: int, shuffle: bool):
        self.by_source: dict[int, list[int]] = {}
        for i, s in enumerate(source_index):
            self.by_source.setdefault(int(s), []).append(i)
        if batch_size < len(self.by_source):
            raise ConfigError(f"MORE puts every source in every batch: per_device_batch_size={batch_size} is smaller "
                              f"than the {len(self.by_source)} preference sources; raise the batch size")
        self.batch_size, self.seed, self.shuffle, self.epoch = batch_size, seed, shuffle, 0
        self.n_batches = math.ceil(len(source_index) / batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_batches * self.batch_size

    def __iter__(self):
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        sources = sorted(self.by_source)
        queues: dict[int, list[int]] = {s: [] for s in sources}

        def take(s: int) -> int:
            if not queues[s]:
                queues[s] = list(self.by_source[s])
                if self.shuffle:
                    rng.shuffle(queues[s])
            return queues[s].pop(0)

        for b in range(self.n_batches):
            share, extra = divmod(self.batch_size, len(sources))
            for k, s in enumerate(sources):
                bonus = 1 if (k - b) % len(sources) < extra else 0  # rotate the remainder slots
                for _ in range(share + bonus):
                    yield take(s)


class RegularizedRewardTrainer(RewardTrainer):
    """`trl.RewardTrainer` on a `RewardHeadModel`, with optional GRM (`grm`), MORE (`more`) and ODIN
    (`odin`; the model must carry a `length_head`).

    A peft config puts the adapters on the backbone; the head is always trained in full.
    `lambda_log` records MORE's λ for every batch and `odin_log` ODIN's loss terms;
    `training_log_extras()` hands them to the recipe.
    """

    def __init__(self, model, args=None, train_dataset=None, processing_class=None, peft_config=None,
                 callbacks=None, *, grm: GRMSettings | None = None, more: MORESettings | None = None,
                 odin: ODINSettings | None = None, source_names: Sequence[str] = ()):
        if odin is not None and getattr(model, "length_head", None) is None:
            raise ConfigError("ODIN training needs the model's length head (RewardHeadModel.for_training(length_head=True))")
        if peft_config is not None:
            from peft import get_peft_model

            model.lm = get_peft_model(model.lm, peft_config)
        self.grm, self.more, self.odin, self.source_names = grm, more, odin, list(source_names)
        self.lambda_log: list[dict[str, Any]] = []
        self.odin_log: list[dict[str, Any]] = []
        self._reference = None
        if grm is not None and grm.regularizer == "dpo" and not is_peft_model(model.lm):
            # The starting model, frozen: DPO's reference. With LoRA the adapter-free model is the reference.
            self._reference = copy.deepcopy(model.lm).eval().requires_grad_(False)
        collator = PreferenceCollatorWithResponses(pad_token_id=processing_class.pad_token_id,
                                                   pad_to_multiple_of=args.pad_to_multiple_of)
        super().__init__(model=model, args=args, data_collator=collator, train_dataset=train_dataset,
                         processing_class=processing_class, callbacks=callbacks)

    def _get_train_sampler(self, train_dataset=None):
        if self.more is None:
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return SourceBalancedSampler(dataset["source_index"], self.args.per_device_train_batch_size,
                                     seed=self.args.seed, shuffle=self.args.train_sampling_strategy != "sequential")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        response_mask = inputs.pop("response_mask")
        sources = inputs.pop("source_index")
        bt_loss, outputs = super().compute_loss(model, inputs, return_outputs=True)
        mode = "train" if self.model.training else "eval"
        if self.odin is not None:
            reward_loss = self._odin_loss(model, outputs, response_mask, mode, inputs.get("margin"))
        elif self.more is not None:
            reward_loss = self._more_loss(model, outputs, sources, mode, inputs.get("margin"))
        else:
            reward_loss = bt_loss
        loss = reward_loss
        if self.grm is not None:
            regularizer = self._regularizer(model, outputs, inputs, response_mask)
            loss = grm_loss(reward_loss, regularizer, self.grm.alpha)
            self._metrics[mode]["reward_loss"].append(reward_loss.item())
            self._metrics[mode]["grm_regularizer"].append(regularizer.item())
        return (loss, outputs) if return_outputs else loss

    def training_log_extras(self) -> dict[str, Any]:
        """What the saved training log adds for this trainer: sources and MORE's λ per batch."""
        spec = self.accelerator.unwrap_model(self.model).spec
        return {"judge_kind": "reward_head", "head": asdict(spec), "sources": self.source_names,
                "more_lambdas": self.lambda_log if self.more is not None else None,
                "odin": self.odin.model_dump() if self.odin is not None else None,
                "odin_terms": self.odin_log if self.odin is not None else None}

    # -- ODIN --

    def _odin_loss(self, model, outputs, response_mask: torch.Tensor, mode: str,
                   margin: torch.Tensor | None = None) -> torch.Tensor:
        unwrapped = self.accelerator.unwrap_model(model)
        length_reward = unwrapped.length_head(outputs.features.to(unwrapped.head_dtype)).squeeze(-1)
        loss, parts = odin_loss(outputs.logits.squeeze(-1), length_reward, response_mask.sum(-1),
                                unwrapped.head.weight, unwrapped.length_head.weight, self.odin, margin)
        values = {name: round(value.item(), 6) for name, value in parts.items()}
        for name, value in values.items():
            self._metrics[mode][f"odin/{name}"].append(value)
        if mode == "train":
            self.odin_log.append({"step": self.state.global_step + 1, **values})
        return loss

    # -- MORE --

    def _more_loss(self, model, outputs, sources: torch.Tensor, mode: str,
                   margin: torch.Tensor | None = None) -> torch.Tensor:
        rewards_chosen, rewards_rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
        pair_losses = bradley_terry_losses(rewards_chosen, rewards_rejected, margin)
        present = sorted(set(sources.tolist()))
        weights = min_norm_weights(self._head_gradients(model, outputs.features, sources, present),
                                   max_iter=self.more.max_solver_iterations)
        loss = sum(float(w) * pair_losses[sources == s].mean() for w, s in zip(weights, present))
        by_name = dict.fromkeys(self.source_names, 0.0)
        for w, s in zip(weights, present):
            by_name[self.source_names[s]] = round(float(w), 6)
        if mode == "train":
            self.lambda_log.append({"step": self.state.global_step + 1, "lambdas": by_name})
        for name, w in by_name.items():
            self._metrics[mode][f"lambda/{name}"].append(w)
        return loss

    def _head_gradients(self, model, features: torch.Tensor, sources: torch.Tensor, present: list[int]) -> np.ndarray:
        """Per-source gradient of the mean Bradley–Terry loss w.r.t. the reward head's parameters only."""
        head = self.accelerator.unwrap_model(model).head
        params = [p for p in head.parameters() if p.requires_grad]
        chosen, rejected = torch.chunk(features.detach().to(next(head.parameters()).dtype), chunks=2)
        grads = []
        with torch.enable_grad():
            for s in present:
                pick = sources == s
                loss = bradley_terry_losses(head(chosen[pick]), head(rejected[pick])).mean()
                grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]).float().cpu().numpy())
        return np.stack(grads)

    # -- GRM --

    def _regularizer(self, model, outputs, inputs, response_mask: torch.Tensor) -> torch.Tensor:
        lm = self.accelerator.unwrap_model(model).lm
        kind, beta = self.grm.regularizer, self.grm.beta
        input_ids, n = inputs["input_ids"], inputs["input_ids"].shape[0] // 2
        if kind == "sft":  # only the chosen responses: leave the rejected rows out of the vocabulary projection
            response_mask = response_mask.clone()
            response_mask[n:] = 0
        logps = response_logprobs(lm, outputs.hidden_states, input_ids, response_mask)
        if kind == "sft":
            return grm_regularizer(kind, beta, logps[:n])
        if kind == "dpo_noref":
            return grm_regularizer(kind, beta, logps[:n], logps[n:])
        with torch.no_grad():
            ref = self._reference_logprobs(lm, input_ids, inputs["attention_mask"], response_mask)
        return grm_regularizer(kind, beta, logps[:n], logps[n:], ref[:n], ref[n:])

    def _reference_logprobs(self, lm, input_ids, attention_mask, response_mask) -> torch.Tensor:
        if self._reference is None:  # LoRA: the model with its adapter switched off
            with lm.disable_adapter():
                hidden = last_hidden_states(lm, input_ids, attention_mask)
                return response_logprobs(lm, hidden, input_ids, response_mask)
        self._reference.to(input_ids.device)
        hidden = last_hidden_states(self._reference, input_ids, attention_mask)
        return response_logprobs(self._reference, hidden, input_ids, response_mask)
