"""The reward-head judge kind on the tiny random-weight Llama: MORE's min-norm solver against brute
force, GRM's loss against its two terms computed apart, one training step of every variant (weights
change, a safetensors checkpoint reloads and scores), and the scoring interface shared with the
generative judge."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from pydantic import ValidationError
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from selfrefine.data import DataSource, load_pairs
from selfrefine.errors import ConfigError, DataError, ModelLoadError
from selfrefine.models.dimensions import get_dimension
from selfrefine.models.judge import Judge
from selfrefine.models.judge_info import JUDGE_INFO, write_judge_info
from selfrefine.models.judge_kind import load_judge
from selfrefine.models.judge_types import AbsoluteItem, PairItem
from selfrefine.models.loading import load_tokenizer
from selfrefine.models.reward_head import HEAD_FILE, HeadSpec, RewardHeadModel
from selfrefine.models.reward_judge import RewardHeadJudge, encode_reward_input, reward_input
from selfrefine.models.training import common
from selfrefine.models.training.config import LoraSettings
from selfrefine.models.training.min_norm import min_norm_value, min_norm_weights
from selfrefine.models.training.reward import reward_rows, tokenize_pairs, train_reward_head
from selfrefine.models.training.reward_config import GRMSettings, MORESettings, ODINSettings, RewardRecipeConfig
from selfrefine.models.training.reward_trainer import RegularizedRewardTrainer, SourceBalancedSampler
from selfrefine.tasks.train_judge import TrainJudgeConfig


@pytest.fixture(scope="module")
def pairs():
    return load_pairs(DataSource(kind="demo", limit=8))


@pytest.fixture(scope="module")
def rows(pairs, tiny_dir):
    """Reward rows of the demo pairs, alternating between two pseudo-sources (for MORE)."""
    rows, _ = reward_rows(pairs, load_tokenizer(tiny_dir), 256)
    return [{**row, "source": "odd" if i % 2 else "even"} for i, row in enumerate(rows)]


def simplex_grid(k: int, n: int) -> np.ndarray:
    return np.array([(*c, n - sum(c)) for c in itertools.product(range(n + 1), repeat=k - 1) if sum(c) <= n]) / n


# -- MORE's min-norm solver ------------------------------------------------------------------------


@pytest.mark.parametrize("k, resolution", [(2, 2000), (3, 200)])
def test_min_norm_weights_match_brute_force_over_the_simplex(k, resolution):
    rng = np.random.default_rng(k)
    grid = simplex_grid(k, resolution)
    for _ in range(25):
        # Shared direction plus noise: optima inside the simplex, on its faces and at vertices all occur.
        grads = rng.normal(size=(k, 4)) + rng.normal(size=4) * rng.uniform(0, 2)
        weights = min_norm_weights(grads)
        norms = np.linalg.norm(grid @ grads, axis=1)
        assert weights.min() >= 0 and weights.sum() == pytest.approx(1.0)
        assert min_norm_value(grads, weights) <= norms.min() + 1e-9  # never worse than the grid's best
        # Linearly independent gradients make the optimum unique: the grid's best point is within a step.
        np.testing.assert_allclose(weights, grid[norms.argmin()], atol=1 / resolution)


def test_min_norm_weights_known_answers():
    g = np.array([1.0, 2.0, -1.0])
    np.testing.assert_allclose(min_norm_weights([g, -g]), [0.5, 0.5])                # opposite: they cancel
    np.testing.assert_allclose(min_norm_weights([[1.0, 0.0], [3.0, 0.0]]), [1.0, 0.0])  # the smaller one alone
    np.testing.assert_allclose(min_norm_weights([[1.0, 0], [0, 1.0], [-1.0, -1.0]]), [1 / 3, 1 / 3, 1 / 3], atol=1e-6)
    assert min_norm_weights([[5.0, 1.0]]).tolist() == [1.0]
    with pytest.raises(ValueError, match="K×d"):
        min_norm_weights(np.zeros((0, 3)))


def test_source_balanced_sampler_puts_every_source_in_every_batch():
    sources = [0] * 6 + [1] * 2 + [2]
    sampler = SourceBalancedSampler(sources, batch_size=3, seed=0, shuffle=True)
    order = list(sampler)
    assert len(order) == len(sampler) == 9
    for start in range(0, len(order), 3):
        assert sorted(sources[i] for i in order[start:start + 3]) == [0, 1, 2]
    sampler.set_epoch(1)
    assert list(sampler) != order  # a fresh order each epoch
    with pytest.raises(ConfigError, match="smaller than the 3 preference sources"):
        SourceBalancedSampler(sources, batch_size=2, seed=0, shuffle=True)


# -- GRM's loss ------------------------------------------------------------------------------------


def _trainer(tiny_dir, tmp_path, dataset, names, **recipe) -> RegularizedRewardTrainer:
    config = RewardRecipeConfig(bf16=False, per_device_batch_size=4, **recipe)
    lm = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    model = RewardHeadModel.for_training(lm, tiny_dir, config.head, config.head_size, seed=0,
                                         length_head=config.odin is not None)
    return RegularizedRewardTrainer(model, config.to_trl(str(tmp_path), common.resolve_runtime(config)), dataset,
                                    load_tokenizer(tiny_dir), grm=config.grm, more=config.more, odin=config.odin,
                                    source_names=names)


def _response_logprob(lm, ids: list[int], prompt_len: int) -> torch.Tensor:
    """log π(response + EOS | prompt), from a plain causal-LM forward pass on one unpadded sequence."""
    logprobs = torch.log_softmax(lm(input_ids=torch.tensor([ids])).logits[0, :-1].float(), dim=-1)
    targets = torch.tensor(ids[1:])
    return logprobs.gather(1, targets[:, None])[prompt_len - 1:, 0].sum()


@pytest.mark.parametrize("regularizer", ["sft", "dpo_noref", "dpo"])
def test_grm_loss_is_the_weighted_sum_of_the_reward_loss_and_the_regularizer(tiny_dir, tmp_path, rows, regularizer):
    alpha, beta = 0.3, 0.1
    dataset, names, _ = tokenize_pairs(Dataset.from_list(rows[:4]), load_tokenizer(tiny_dir))
    trainer = _trainer(tiny_dir, tmp_path, dataset, names, grm=GRMSettings(alpha=alpha, beta=beta, regularizer=regularizer))
    examples = [dataset[i] for i in range(4)]
    model = trainer.model.train()  # as in a training step (the tiny model has no dropout)
    with torch.no_grad():
        total = trainer.compute_loss(model, trainer.data_collator(examples))

        # The two terms apart: rewards one sequence at a time, log π from the plain LM forward pass.
        def reward(ids):
            return model(input_ids=torch.tensor([ids])).logits[0, 0]

        reward_loss = torch.stack([-F.logsigmoid(reward(e["chosen_ids"]) - reward(e["rejected_ids"])) for e in examples]).mean()
        chosen = torch.stack([_response_logprob(model.lm, e["chosen_ids"], e["prompt_len"]) for e in examples])
        rejected = torch.stack([_response_logprob(model.lm, e["rejected_ids"], e["prompt_len"]) for e in examples])
    if regularizer == "sft":
        reg = -F.logsigmoid(beta * chosen).mean()
    elif regularizer == "dpo_noref":
        reg = -F.logsigmoid(beta * (chosen - rejected)).mean()
    else:  # before any step the policy is its own reference: every log-ratio is 0
        reg = torch.tensor(math.log(2.0))
    assert reg.item() > 0 and reward_loss.item() > 0
    assert total.item() == pytest.approx(((1 - alpha) * reward_loss + alpha * reg).item(), rel=1e-5)
    logged = trainer._metrics["train"]
    assert logged["reward_loss"][-1] == pytest.approx(reward_loss.item(), rel=1e-5)
    assert logged["grm_regularizer"][-1] == pytest.approx(reg.item(), rel=1e-5)


# -- a margin from graded pairs -------------------------------------------------------------------------


def test_reward_rows_turn_each_pairs_gap_into_a_margin(pairs, tiny_dir):
    graded = [dataclasses.replace(p, gap=g) for p, g in zip(pairs[:3], (0.5, None, 2.0))]
    tokenizer = load_tokenizer(tiny_dir)
    rows, _ = reward_rows(graded, tokenizer, 256, margin_per_gap=1.5)
    assert [r["margin"] for r in rows] == [0.75, 0.0, 3.0]  # an ungraded pair trains with no margin
    plain, _ = reward_rows(graded, tokenizer, 256)
    assert all("margin" not in r for r in plain)
    dataset, _, _ = tokenize_pairs(Dataset.from_list(rows), tokenizer)
    assert dataset["margin"] == [0.75, 0.0, 3.0]


@pytest.mark.parametrize("more", [False, True])
def test_a_pair_margin_enters_the_bradley_terry_loss(tiny_dir, tmp_path, rows, more):
    margins = [0.0, 1.0, 2.5, 0.5]
    dataset, names, _ = tokenize_pairs(Dataset.from_list([{**r, "margin": m} for r, m in zip(rows[:4], margins)]),
                                       load_tokenizer(tiny_dir))
    recipe = {"more": MORESettings(), "group_by_length": False} if more else {}
    trainer = _trainer(tiny_dir, tmp_path, dataset, names, **recipe)
    examples = [dataset[i] for i in range(4)]
    model = trainer.model.train()
    with torch.no_grad():
        loss = trainer.compute_loss(model, trainer.data_collator(examples))
        rewards = [model(input_ids=torch.tensor([e[k]])).logits[0, 0] for e in examples for k in ("chosen_ids", "rejected_ids")]
    per_pair = torch.stack([-F.logsigmoid(c - r - m) for c, r, m in zip(rewards[0::2], rewards[1::2], margins)])
    if more:  # one λ per source on the simplex; each source's mean loss carries its pairs' margins
        (entry,) = trainer.lambda_log
        odd = torch.tensor([i % 2 == 1 for i in range(4)])
        expected = entry["lambdas"]["odd"] * per_pair[odd].mean() + entry["lambdas"]["even"] * per_pair[~odd].mean()
    else:
        expected = per_pair.mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    if not more:  # positive margins ask for a wider separation
        assert loss.item() > torch.stack([-F.logsigmoid(c - r) for c, r in zip(rewards[0::2], rewards[1::2])]).mean().item()


# -- ODIN: a length head beside the reward head ---------------------------------------------------------


def test_odin_loss_is_the_ranking_loss_on_both_heads_plus_its_length_and_orthogonality_terms(tiny_dir, tmp_path, rows):
    settings = ODINSettings(length_weight=0.7, orthogonal_weight=0.3)
    dataset, names, _ = tokenize_pairs(Dataset.from_list(rows[:4]), load_tokenizer(tiny_dir))
    trainer = _trainer(tiny_dir, tmp_path, dataset, names, odin=settings)
    examples = [dataset[i] for i in range(4)]
    model = trainer.model.train()
    with torch.no_grad():
        loss = trainer.compute_loss(model, trainer.data_collator(examples))
        sequences = [e[k] for k in ("chosen_ids", "rejected_ids") for e in examples]  # TRL's layout
        features = [model(input_ids=torch.tensor([ids])).features for ids in sequences]
        quality = torch.stack([model.head(f)[0, 0] for f in features]).numpy()
        length = torch.stack([model.length_head(f)[0, 0] for f in features]).numpy()
    lengths = np.array([len(ids) - e["prompt_len"] for ids, e in zip(sequences, examples + examples)], dtype=float)
    total = quality + length
    ranking = np.mean(np.log1p(np.exp(-(total[:4] - total[4:]))))
    rho_q, rho_l = np.corrcoef(quality, lengths)[0, 1], np.corrcoef(length, lengths)[0, 1]
    w_q, w_l = model.head.weight.detach().numpy().ravel(), model.length_head.weight.detach().numpy().ravel()
    expected = ranking + 0.7 * (abs(rho_q) - rho_l) + 0.3 * abs(w_q @ w_l)
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    logged = trainer._metrics["train"]
    assert logged["odin/length_corr_quality"][-1] == pytest.approx(rho_q, abs=1e-4)
    assert logged["odin/ranking_loss"][-1] == pytest.approx(ranking, rel=1e-4)
    assert [t["step"] for t in trainer.odin_log] == [1]


def test_an_odin_judge_is_saved_and_scores_with_its_quality_head_alone(tiny_dir, tmp_path, rows, pairs):
    config = RewardRecipeConfig(max_steps=2, per_device_batch_size=4, max_length=256, learning_rate=1e-2,
                                odin=ODINSettings())
    out = tmp_path / "judge"
    train_reward_head("tiny", Dataset.from_list(rows[:8]), out, config)
    assert set(load_file(str(out / HEAD_FILE))) == {"weight", "bias"}  # the length head is not saved
    log = json.loads((out / common.TRAINING_LOG).read_text())
    assert log["odin"] == ODINSettings().model_dump()
    assert [t["step"] for t in log["odin_terms"]] == [1, 2]
    assert all(-1 <= t["length_corr_quality"] <= 1 and t["ranking_loss"] > 0 for t in log["odin_terms"])
    judge = load_judge(str(out), dtype="float32", device="cpu")
    model = RewardHeadModel.from_pretrained(out)
    assert model.length_head is None
    item = AbsoluteItem(pairs[0].context, pairs[0].chosen, pairs[0].dimension)
    ids, _ = encode_reward_input(judge.tokenizer, *_reward_text(item, judge))
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([ids])).logits[0, 0].item()
    assert judge.score_absolute([item])[0].score == pytest.approx(alone, abs=1e-5)


def _reward_text(item: AbsoluteItem, judge) -> tuple[str, str]:
    rendered = reward_input(item.context, item.response, get_dimension(item.dimension), judge.tokenizer, 256)
    return rendered.prompt, rendered.completion


# -- one training step of every variant ----------------------------------------------------------------


VARIANTS = {
    "reward_head": {},
    "grm_sft": {"grm": GRMSettings(regularizer="sft", alpha=0.1)},
    "grm_dpo": {"grm": GRMSettings(regularizer="dpo", alpha=0.1), "head": "mlp", "head_size": 16},
    "more": {"more": MORESettings()},
    "odin": {"odin": ODINSettings()},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_variant_trains_a_step_and_saves_a_judge_that_scores(tiny_dir, tmp_path, rows, pairs, variant):
    config = RewardRecipeConfig(max_steps=1, per_device_batch_size=4, max_length=256, learning_rate=1e-2,
                                **VARIANTS[variant])
    out = tmp_path / "judge"
    result = train_reward_head("tiny", Dataset.from_list(rows[:4]), out, config)
    assert result.steps == 1 and result.num_examples == 4

    # Only safetensors weights: the backbone as a plain causal LM, and the head beside it.
    assert not [p.name for p in out.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    base, saved = load_file(str(Path(tiny_dir) / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert saved.keys() == base.keys()
    assert [k for k in base if not torch.equal(base[k], saved[k])], "the step left the backbone unchanged"
    spec = HeadSpec(config.head, hidden_size=64, mlp_size=config.head_size)
    initial = spec.build(torch.Generator().manual_seed(config.seed)).state_dict()
    head = load_file(str(out / HEAD_FILE))
    assert any(not torch.equal(initial[k], head[k]) for k in initial), "the step left the head unchanged"
    info = json.loads((out / JUDGE_INFO).read_text())
    assert info == {"kind": "reward_head", "head": {"kind": config.head, "hidden_size": 64, "mlp_size": config.head_size},
                    "input_format": "plain"}

    log = json.loads((out / common.TRAINING_LOG).read_text())
    assert log["recipe"] == "reward_head" and log["sources"] == ["even", "odd"]
    if variant == "more":
        (entry,) = log["more_lambdas"]  # one batch: one λ, on the simplex, for both sources
        assert entry["step"] == 1 and set(entry["lambdas"]) == {"even", "odd"}
        assert sum(entry["lambdas"].values()) == pytest.approx(1.0, abs=1e-5)
    else:
        assert log["more_lambdas"] is None

    judge = load_judge(str(out), dtype="float32", device="cpu")
    assert isinstance(judge, RewardHeadJudge)
    items = [PairItem(p.context, p.chosen, p.rejected, p.dimension) for p in pairs[:3]]
    verdicts = judge.compare(items)
    rewards = judge.score_absolute([AbsoluteItem(p.context, r, p.dimension) for p in pairs[:3] for r in (p.chosen, p.rejected)])
    for v, chosen, rejected in zip(verdicts, rewards[0::2], rewards[1::2]):
        assert v.p_a == pytest.approx(1 / (1 + math.exp(-(chosen.score - rejected.score))), abs=1e-5)
        assert v.consistent and v.p_a_forward == v.p_a_swapped == v.p_a
        assert v.verdict == ("A" if chosen.score >= rejected.score else "B")
        assert chosen.p_yes == pytest.approx(1 / (1 + math.exp(-chosen.score)))


def test_lora_with_dpo_regularizer_uses_the_adapter_free_model_as_reference(tiny_dir, tmp_path, rows):
    config = RewardRecipeConfig(max_steps=1, per_device_batch_size=4, max_length=256, learning_rate=5e-2,
                                lora=LoraSettings(r=4, alpha=8, dropout=0.0), grm=GRMSettings(regularizer="dpo"))
    result = train_reward_head("tiny", Dataset.from_list(rows[:4]), tmp_path / "judge", config)
    assert result.steps == 1 and result.loss_history
    saved = load_file(str(tmp_path / "judge" / "model.safetensors"))
    assert not [k for k in saved if "lora" in k.lower()]  # merged into a plain model
    base = load_file(str(Path(tiny_dir) / "model.safetensors"))
    assert [k for k in base if not torch.equal(base[k], saved[k])]
    assert isinstance(load_judge(str(tmp_path / "judge"), dtype="float32", device="cpu"), RewardHeadJudge)


def test_a_reward_head_judge_continues_its_own_head(tiny_dir, tmp_path):
    lm = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    RewardHeadModel.for_training(lm, tiny_dir, "linear", 1024, seed=3).save_pretrained(tmp_path / "previous")
    saved = load_file(str(tmp_path / "previous" / HEAD_FILE))
    again = RewardHeadModel.for_training(lm, tmp_path / "previous", "linear", 1024, seed=99)
    assert all(torch.equal(again.head.state_dict()[k], saved[k]) for k in saved)  # not a new seed-99 head
    with pytest.raises(ConfigError, match="use the same head settings"):
        RewardHeadModel.for_training(lm, tmp_path / "previous", "mlp", 1024, seed=0)


# -- scoring -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh_judge(tiny_dir):
    lm = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    model = RewardHeadModel.for_training(lm, tiny_dir, "linear", 1024, seed=0).eval()
    return RewardHeadJudge(model, load_tokenizer(tiny_dir), batch_size=8)


def test_rewards_do_not_depend_on_batching_or_padding(fresh_judge, pairs):
    items = [AbsoluteItem(p.context, r, p.dimension) for p in pairs[:3] for r in (p.chosen, p.rejected)]
    batched = [r for r, _ in fresh_judge.rewards(items)]
    one_at_a_time = RewardHeadJudge(fresh_judge.model, fresh_judge.tokenizer, batch_size=1)
    alone = [r for r, _ in one_at_a_time.rewards(items)]
    assert len(set(np.round(alone, 6))) > 1  # the random head does tell responses apart
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    # Right padding (the training collator's) reads the same last token as left padding.
    tokenizer = fresh_judge.tokenizer
    encoded = [encode_reward_input(tokenizer, *(lambda r: (r.prompt, r.completion))(
        reward_input(it.context, it.response, get_dimension(it.dimension), tokenizer, 1024)))[0] for it in items[:4]]
    width = max(map(len, encoded))
    ids = torch.tensor([e + [tokenizer.pad_token_id] * (width - len(e)) for e in encoded])
    mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in encoded])
    with torch.no_grad():
        right = fresh_judge.model(input_ids=ids, attention_mask=mask).logits[:, 0]
    np.testing.assert_allclose(right.numpy(), alone[:4], atol=1e-5)


def test_each_distinct_response_goes_through_the_model_once(fresh_judge, pairs, monkeypatch):
    judge = RewardHeadJudge(fresh_judge.model, fresh_judge.tokenizer, batch_size=2)
    rows_seen = []
    forward = judge.model.forward
    monkeypatch.setattr(judge.model, "forward", lambda **kw: rows_seen.append(len(kw["input_ids"])) or forward(**kw))
    items = [PairItem(p.context, p.chosen, p.rejected, p.dimension) for p in pairs[:3]]
    verdicts = judge.compare(items + items[:1])  # a repeated pair within one call, too
    scores = judge.score_absolute([AbsoluteItem(p.context, r, p.dimension) for p in pairs[:3] for r in (p.chosen, p.rejected)])
    assert sum(rows_seen) == 6  # three pairs, two responses each; the rest are known rewards
    assert verdicts[3] == verdicts[0]
    np.testing.assert_allclose([s.score for s in scores], [r for r, _ in fresh_judge.rewards(
        [AbsoluteItem(p.context, r, p.dimension) for p in pairs[:3] for r in (p.chosen, p.rejected)])], atol=1e-5)


def test_training_rows_encode_like_the_judge_scores(pairs, rows, tiny_dir):
    tokenizer = load_tokenizer(tiny_dir)
    dataset, names, _ = tokenize_pairs(Dataset.from_list(rows), tokenizer)
    assert names == ["even", "odd"] and dataset["source_index"][:2] == [0, 1]
    for pair, example in zip(pairs, dataset):
        fitted = reward_input(pair.context, pair.chosen, get_dimension(pair.dimension), tokenizer, 256)
        ids, prompt_len = encode_reward_input(tokenizer, fitted.prompt, fitted.completion)
        assert example["chosen_ids"] == ids and example["prompt_len"] == prompt_len
        assert ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(ids[prompt_len:-1]) == " " + pair.chosen


def test_an_over_long_response_is_read_without_its_tail_in_training_and_in_scoring(fresh_judge, pairs, tiny_dir, caplog):
    tokenizer, dim = fresh_judge.tokenizer, get_dimension(pairs[0].dimension)
    head = " ".join(f"word{i}" for i in range(60))
    long_a, long_b = head + " and then one ending", head + " but another ending entirely"
    limit = len(encode_reward_input(tokenizer, *(lambda r: (r.prompt, r.completion))(
        reward_input([], head, dim, tokenizer, 1024)))[0]) - 5  # shorter than the shared head
    # Training: the pair is kept (not dropped), both sides cut to max_length, and counted.
    row = {"prompt": reward_input([], long_b, dim, tokenizer, limit).prompt, "chosen": " " + long_a,
           "rejected": " " + long_b, "source": "all"}
    dataset, _, truncated = tokenize_pairs(Dataset.from_list([row]), tokenizer, limit)
    assert truncated == 1 and len(dataset) == 1
    assert len(dataset[0]["chosen_ids"]) == len(dataset[0]["rejected_ids"]) == limit
    assert dataset[0]["chosen_ids"][-1] == tokenizer.eos_token_id
    # Scoring: the judge reads the same cut sequence, so two answers that differ only after the cut
    # get one reward; one summary warning, and the count is kept.
    judge = RewardHeadJudge(fresh_judge.model, tokenizer, batch_size=2, max_length=limit)
    with caplog.at_level("WARNING"):
        rewards = [r for r, _ in judge.rewards([AbsoluteItem([], long_a, pairs[0].dimension),
                                                AbsoluteItem([], long_b, pairs[0].dimension)])]
    assert rewards[0] == pytest.approx(rewards[1]) and judge.truncated == 2
    assert [r.getMessage() for r in caplog.records if "without their tail" in r.getMessage()] == [
        f"reward head: 2 of 2 responses longer than max_length={limit} were read without their tail"]
    full = RewardHeadJudge(fresh_judge.model, tokenizer, batch_size=2, max_length=1024)
    uncut = [r for r, _ in full.rewards([AbsoluteItem([], long_a, pairs[0].dimension),
                                         AbsoluteItem([], long_b, pairs[0].dimension)])]
    assert uncut[0] != pytest.approx(uncut[1]) and full.truncated == 0


def test_a_reward_head_has_no_chain_of_thought(fresh_judge, pairs):
    with pytest.raises(ConfigError, match="generative judge"):
        fresh_judge.compare_cot([PairItem(pairs[0].context, pairs[0].chosen, pairs[0].rejected)])


# -- loading and bad input ---------------------------------------------------------------------------


def test_load_judge_picks_the_class_from_judge_json(tiny_dir, tmp_path):
    assert isinstance(load_judge(tiny_dir, dtype="float32", device="cpu"), Judge)  # no judge.json: generative
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / JUDGE_INFO).write_text('{"kind": "oracle"}')
    with pytest.raises(ModelLoadError, match="known kinds are generative, reward_head"):
        load_judge(str(broken))
    write_judge_info(broken, "reward_head", head={"kind": "linear", "hidden_size": 64, "mlp_size": 1024})
    with pytest.raises(ModelLoadError, match="backbone"):
        load_judge(str(broken), dtype="float32", device="cpu")


@pytest.mark.parametrize("build, field", [
    (lambda: GRMSettings(alpha=1.5), "alpha"),
    (lambda: GRMSettings(regularizer="kl"), "regularizer"),
    (lambda: RewardRecipeConfig(head="conv"), "head"),
    (lambda: RewardRecipeConfig(more={"max_solver_iterations": 0}), "more.max_solver_iterations"),
    (lambda: RewardRecipeConfig(odin={"length_weight": -1}), "odin.length_weight"),
    (lambda: RewardRecipeConfig(odin={}, head="mlp"), "head: linear"),
    (lambda: RewardRecipeConfig(odin={}, more={}), "ODIN and MORE"),
    (lambda: RewardRecipeConfig(odin={}, group_by_length=True), "group_by_length"),
    (lambda: TrainJudgeConfig(judge_kind="classifier"), "judge_kind"),
    (lambda: TrainJudgeConfig(judge_kind="reward_head", rationale_training="star_dpo"), "rationale_training"),
])
def test_bad_reward_config_fails_on_construction_naming_the_field(build, field):
    with pytest.raises(ValidationError) as info:
        build()
    assert field.split(".")[-1] in str(info.value)


def test_more_needs_two_sources_and_pairs_need_text(tmp_path, rows):
    one_source = Dataset.from_list([{**r, "source": "all"} for r in rows])
    with pytest.raises(DataError, match="two or more sources"):
        train_reward_head("tiny", one_source, tmp_path / "a", RewardRecipeConfig(more=MORESettings()))
    empty = Dataset.from_list([{**rows[0], "chosen": " "}])
    with pytest.raises(DataError, match="chosen"):
        train_reward_head("tiny", empty, tmp_path / "b")


def test_training_only_the_last_blocks_leaves_the_rest_of_the_backbone_as_it_was(tiny_dir, tmp_path, rows):
    config = RewardRecipeConfig(max_steps=2, per_device_batch_size=2, max_length=256, learning_rate=1e-2,
                                train_last_layers=1, group_by_length=True)
    out = tmp_path / "judge"
    result = train_reward_head("tiny", Dataset.from_list(rows[:4]), out, config)
    assert result.steps == 2
    base, saved = load_file(str(Path(tiny_dir) / "model.safetensors")), load_file(str(out / "model.safetensors"))
    changed = {k for k in base if not torch.equal(base[k], saved[k])}
    assert changed and all(k.startswith(("model.layers.1.", "model.norm.")) for k in changed), sorted(changed)
    assert not any(k.startswith(("model.layers.0.", "model.embed_tokens.")) for k in changed)
    spec = HeadSpec(config.head, hidden_size=64, mlp_size=config.head_size)
    initial = spec.build(torch.Generator().manual_seed(config.seed)).state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in load_file(str(out / HEAD_FILE)).items())


def test_layer_freezing_and_length_grouping_refuse_settings_that_cannot_work(tiny_dir, tmp_path, rows):
    with pytest.raises(ValidationError, match="group_by_length"):
        RewardRecipeConfig(group_by_length=True, shuffle=False)
    with pytest.raises(ValidationError, match="train_last_layers"):
        RewardRecipeConfig(train_last_layers=2, lora=LoraSettings(r=4))
    with pytest.raises(ValidationError, match="MORE lays out"):
        RewardRecipeConfig(group_by_length=True, more=MORESettings())
    with pytest.raises(ConfigError, match="train_last_layers=5, but the model has 2 transformer blocks"):
        train_reward_head("tiny", Dataset.from_list(rows[:2]), tmp_path / "j",
                          RewardRecipeConfig(max_steps=1, per_device_batch_size=2, max_length=256, train_last_layers=5))
