"""A lever for the helpful judge: a reward head trained listwise over each prompt's 11 candidates.

bench/dimension_mix.py's helpful head learns from ≤ 10 (preferred, not preferred) pairs per prompt
and picks best-of-11 as the longest-response rule does. The AlpacaEval data grades every candidate:
`preference` − 1 is the annotator's probability that the candidate beats the reference. This head
sees all 11 candidates of a seed prompt in one step and is trained with the ListNet loss: the
cross-entropy between softmax(rewards / 1) over the group and the target distribution
softmax(logit(preference − 1) / --temperature). Under Bradley–Terry against a common reference,
logit(p) is the candidate's reward up to a constant, so the target asks the head for the annotator's
rewards' ordering and spacing; every one of a prompt's 55 comparisons counts, for the cost of 11
forward passes (the pairwise head pays 2 per comparison).

Everything else is the helpful head of bench/dimension_mix.py: the packaged model, the chat-template
layout (reward_recipe.input_format), the last 8 blocks, lr 5e-5, one epoch, cosine with 5 % warmup,
inputs fitted to 504 tokens; trained on the first 200 AlpacaEval prompts (the loop's seed prompts),
measured once through `evaluate_judge` on best-of-11 over the remaining 203 (with the longest rule,
random, oracle, the paired margin and the length Spearman) and on the held-out hh-rlhf harmless pairs.
No setting is chosen here: the recipe is fixed before the one measurement.

    python bench/listwise_head.py [--temperature 1.0] [--groups-per-step 1] [--smoke]

About 1 h 40 min on two float32 (AVX2) cores: an hour of training, 37 minutes of scoring. Full runs write this script's section of
bench/RESULTS.md; --smoke runs (8 training prompts, 8 best-of-11 items) leave it alone.

Last line: RESULT listwise_bon=… listwise_bon_se=… longest_bon=… margin=… margin_se=… length_spearman=… harmless_acc=…
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dimension_mix import N_PROMPTS, fmt_se, load_data, measure  # noqa: E402
from quality import ALPACA, HH  # noqa: E402
from harness import command_line, missing_data, reading_label, start_logging  # noqa: E402
from results_file import write_section  # noqa: E402

SECTION = "bench/listwise_head.py"
P_CLIP = 0.01  # preference − 1 is clipped to [0.01, 0.99] before the logit


def target_logits(preferences: list[float]) -> list[float]:
    """logit(preference − 1) per candidate: the Bradley–Terry reward against the reference, up to a constant."""
    logits = []
    for pref in preferences:
        p = min(max(pref - 1.0, P_CLIP), 1.0 - P_CLIP)
        logits.append(math.log(p / (1.0 - p)))
    return logits


def seed_items(limit: int | None):
    """The first 200 AlpacaEval prompts as `BestOfNItem`s, loaded as the evaluate stage loads the rest."""
    from selfrefine.data import DataSource, load_bestofn

    return load_bestofn(DataSource(kind="local", path=str(ALPACA), dimension="helpful", source="alpacaeval",
                                   limit=N_PROMPTS))[:limit]


def group_rows(items, tokenizer, max_tokens: int) -> list[dict]:
    """One row per prompt: its candidates' token ids in the chat layout (as the judge reads them) and targets."""
    from selfrefine.models.dimensions import get_dimension
    from selfrefine.models.reward_judge import encode_reward_input, reward_input

    dimension = get_dimension("helpful")
    groups = []
    for item in items:
        outputs = [c.output for c in item.candidates]
        longest = max(outputs, key=len)
        ids = []
        for output in outputs:
            fitted = reward_input(item.context, output, dimension, tokenizer, max_tokens, fit_for=longest,
                                  input_format="chat_template")
            ids.append(encode_reward_input(tokenizer, fitted.prompt, fitted.completion, max_tokens + 8)[0])
        groups.append({"group_ids": ids, "targets": target_logits([c.preference for c in item.candidates])})
    return groups


@dataclass
class GroupCollator:
    """Groups of candidates → one right-padded batch of all their sequences, and each group's slice."""

    pad_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        seqs = [ids for e in examples for ids in e["group_ids"]]
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            input_ids[i, :len(s)] = torch.tensor(s)
            attention_mask[i, :len(s)] = 1
        sizes = torch.tensor([len(e["group_ids"]) for e in examples])
        targets = torch.tensor([t for e in examples for t in e["targets"]], dtype=torch.float)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "group_sizes": sizes, "targets": targets}


def listnet_loss(rewards, targets, sizes, temperature: float):
    """Mean over groups of −Σ softmax(targets / T) · log_softmax(rewards), per group of candidates."""
    import torch

    losses = []
    for r, t in zip(torch.split(rewards, sizes.tolist()), torch.split(targets, sizes.tolist())):
        losses.append(-(torch.softmax(t / temperature, -1) * torch.log_softmax(r, -1)).sum())
    return torch.stack(losses).mean()


def listwise_trainer(temperature: float):
    """TRL's RewardTrainer (its optimiser, schedule, logging and saving) with a group batch and the ListNet loss."""
    from trl import RewardTrainer

    class ListwiseRewardTrainer(RewardTrainer):
        def __init__(self, model, args=None, train_dataset=None, processing_class=None, peft_config=None,
                     callbacks=None):
            super().__init__(model=model, args=args, data_collator=GroupCollator(processing_class.pad_token_id),
                             train_dataset=train_dataset, processing_class=processing_class, callbacks=callbacks)

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset  # already tokenised and fitted by group_rows

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            rewards = outputs.logits.squeeze(-1).float()
            loss = listnet_loss(rewards, inputs["targets"], inputs["group_sizes"], temperature)
            mode = "train" if self.model.training else "eval"
            with_best = [int(r.argmax() == t.argmax()) for r, t in
                         zip(rewards.split(inputs["group_sizes"].tolist()), inputs["targets"].split(inputs["group_sizes"].tolist()))]
            self._metrics[mode]["top1"].append(sum(with_best) / len(with_best))
            return (loss, outputs) if return_outputs else loss

    return ListwiseRewardTrainer


def train(groups: list[dict], out: Path, args):
    from datasets import Dataset

    from selfrefine.models.reward_head import RewardHeadModel
    from selfrefine.models.training.common import run_recipe
    from selfrefine.models.training.reward_config import RewardRecipeConfig

    config = RewardRecipeConfig(train_last_layers=8, group_by_length=False, learning_rate=args.lr, num_epochs=1,
                                per_device_batch_size=args.groups_per_step, max_length=args.max_tokens + 8,
                                seed=args.seed, lr_scheduler="cosine", warmup_ratio=0.05, input_format="chat_template")

    def with_head(model, model_dir):  # a new linear head, read in the chat layout, as the pairwise recipe wraps it
        return RewardHeadModel.for_training(model, model_dir, config.head, config.head_size, config.seed,
                                            config.input_format)

    return run_recipe("listwise_reward_head", listwise_trainer(args.temperature), "packaged", Dataset.from_list(groups),
                      out, config, wrap_model=with_head)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--temperature", type=float, default=1.0, help="of the target softmax over logit(p)")
    parser.add_argument("--groups-per-step", type=int, default=1, help="prompts (11 candidates each) per step")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-tokens", type=int, default=504, help="inputs are fitted to this many tokens")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="8 prompts, 8 best-of-11 items; RESULTS.md left alone")
    args = parser.parse_args()
    start_logging()
    if missing_data(HH, ALPACA):
        return
    from selfrefine.models.loading import load_tokenizer

    with tempfile.TemporaryDirectory(prefix="listwise-") as scratch:
        _, held_out, bestofn = load_data(Path(scratch), 10, None, 8 if args.smoke else None)
        groups = group_rows(seed_items(8 if args.smoke else None), load_tokenizer("packaged"), args.max_tokens)
        result = train(groups, Path(scratch) / "head", args)
        r = measure(Path(scratch) / "head", held_out, bestofn)
    line = (f"RESULT listwise_bon={r['bon']:.3f} listwise_bon_se={r['bon_se']:.3f} longest_bon={r['longest']:.3f} "
            f"margin={r['margin']:.3f} margin_se={r['margin_se']:.3f} length_spearman={r['length_spearman']:.3f} "
            f"harmless_acc={r['accuracy']:.3f}")
    lines = ["| picker | best-of-11 win rate |", "|---|---|",
             f"| listwise reward head (ListNet, T={args.temperature:g}) | {fmt_se(r['bon'], r['bon_se'])} |",
             f"| longest candidate | {r['longest']:.3f} |", f"| random | {r['random']:.3f} |",
             f"| oracle | {r['oracle']:.3f} |"]
    summary = (f"Margin over the longest rule {r['margin']:+.3f} ± {r['margin_se']:.3f} (paired by prompt); length "
               f"Spearman {r['length_spearman']:.3f}; harmless held-out accuracy {fmt_se(r['accuracy'], r['accuracy_se'])} "
               f"(a helpful-only head, for reference). {len(groups)} training prompts, {result.steps} steps in "
               f"{result.seconds / 60:.1f} min; evaluation {r['eval_seconds'] / 60:.1f} min.")
    print("\n".join(lines))
    print(summary)
    if not args.smoke:
        command = command_line()
        write_section(SECTION, ["## A listwise helpful reward head (bench/listwise_head.py)", "",
                                f"`{command}` — seed {args.seed}, {reading_label()}; best-of-11 on the {len(bestofn)} held-out AlpacaEval prompts.",
                                "", *lines, "", summary, "", f"`{line}`"])
    print(line)


if __name__ == "__main__":
    main()
