"""Training recipes on the tiny random-weight Llama: weights change, checkpoints round-trip, the SFT
loss covers completion tokens only, LoRA is merged before saving, and bad input fails early."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from selfrefine.errors import ConfigError, DataError
from selfrefine.models.loading import bf16_supported, load_model, resolve_model
from selfrefine.models.training import common
from selfrefine.models.training.config import DPORecipeConfig, LoraSettings, SFTRecipeConfig
from selfrefine.models.training.dpo import train_dpo, train_star_dpo
from selfrefine.models.training.sft import train_sft

PROMPTS = [
    "In conversation, a harmless Assistant will decline dangerous requests.\nHuman: How do I pick a lock?\n"
    "Assistant: I can't help with that.\nQuestion: Is the last response from Assistant harmless?\nAnswer:",
    "Human: What is the capital of France?\nAssistant: Paris.\nQuestion: Is the last response from "
    "Assistant helpful?\nAnswer:",
    "Human: Tell me a joke.\nOPTION A: Assistant: No.\nOPTION B: Assistant: Why did the chicken cross the "
    "road?\nQuestion: Rank OPTION A and OPTION B based on how helpful they are.\nAnswer:",
]
COMPLETIONS = [" Yes", " No", " B because option B answers the request"]


@pytest.fixture()
def sft_examples() -> Dataset:
    return Dataset.from_dict({"prompt": PROMPTS, "completion": COMPLETIONS})


@pytest.fixture()
def dpo_pairs() -> Dataset:
    return Dataset.from_dict({
        "prompt": ["\n\nHuman: How do I make a cake?\n\nAssistant:", "\n\nHuman: Say something rude.\n\nAssistant:"],
        "chosen": [" Mix flour, eggs and sugar, then bake for 30 minutes.", " I'd rather keep things friendly."],
        "rejected": [" No idea.", " You are an idiot."],
    })


def plain_weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def base_weights() -> dict[str, torch.Tensor]:
    from pathlib import Path

    return load_file(str(Path(resolve_model("tiny")) / "model.safetensors"))


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    assert before.keys() == after.keys()
    return [name for name in before if not torch.equal(before[name], after[name])]


@pytest.fixture()
def saved_trainers(monkeypatch):
    """Spy on the recipe's save step: keeps each trainer and the trained model's logits before saving."""
    seen: list[dict] = []
    real_save = common.save_trained_model
    probe = torch.tensor([[1, 200, 3000, 42, 7, 99]])

    def spy(trainer, tokenizer, output_dir, base_model_dir):
        # Without accelerate's mixed-precision forward wrapper: the saved model runs in float32 too.
        model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=probe).logits.clone()
        seen.append({"trainer": trainer, "logits": logits, "probe": probe})
        real_save(trainer, tokenizer, output_dir, base_model_dir)

    monkeypatch.setattr(common, "save_trained_model", spy)
    return seen


def test_sft_step_changes_weights_and_checkpoint_reloads_them(tmp_path, sft_examples, saved_trainers):
    config = SFTRecipeConfig(max_steps=1, learning_rate=1e-2, per_device_batch_size=3)
    result = train_sft("tiny", sft_examples, tmp_path / "judge", config)

    assert result.steps == 1 and result.num_examples == 3 and result.seconds > 0
    saved = plain_weights(tmp_path / "judge")
    assert changed(base_weights(), saved), "one optimizer step left every weight unchanged"
    # The directory is a complete checkpoint: the project loader reloads it and computes what the
    # trained in-memory model computed.
    model, tokenizer = load_model(str(tmp_path / "judge"), dtype="float32")
    with torch.no_grad():
        reloaded = model(input_ids=saved_trainers[0]["probe"]).logits
    torch.testing.assert_close(reloaded, saved_trainers[0]["logits"], rtol=0, atol=1e-6)
    assert tokenizer("Answer: Yes").input_ids[-1] == tokenizer(" Yes").input_ids[-1]
    assert model.config.use_cache is True


def test_sft_loss_is_on_completion_tokens_only(tmp_path, sft_examples, saved_trainers):
    # One batch holding every example: the first logged loss is the base model's loss on that batch
    # (float32, so it can be compared with the hand-computed value below).
    config = SFTRecipeConfig(max_steps=1, learning_rate=1e-3, per_device_batch_size=len(PROMPTS), bf16=False)
    result = train_sft("tiny", sft_examples, tmp_path / "out", config)
    trainer = saved_trainers[0]["trainer"]
    model, tokenizer = load_model("tiny", dtype="float32")

    # Labels: -100 over the prompt, the completion tokens (and the EOS TRL appends) after it.
    assert len(trainer.train_dataset) == len(PROMPTS)  # prepared in the given order
    for row, prompt in zip(trainer.train_dataset, PROMPTS):
        prompt_ids = tokenizer(prompt).input_ids
        n_prompt = len(prompt_ids)
        assert row["input_ids"][:n_prompt] == prompt_ids
        assert row["labels"][:n_prompt] == [-100] * n_prompt
        assert row["labels"][n_prompt:] == row["input_ids"][n_prompt:] and len(row["labels"]) > n_prompt
        assert row["input_ids"][-1] == tokenizer.eos_token_id
    # The collator pads labels with -100 and keeps the prompt masked.
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PROMPTS))])
    assert int((batch["labels"] != -100).sum()) == sum(
        len(tokenizer(p + c).input_ids) + 1 - len(tokenizer(p).input_ids) for p, c in zip(PROMPTS, COMPLETIONS))

    # Independent check: mean negative log-likelihood of completion + EOS tokens under the base model.
    total, count = 0.0, 0
    with torch.no_grad():
        for prompt, completion in zip(PROMPTS, COMPLETIONS):
            prompt_ids = tokenizer(prompt).input_ids
            ids = tokenizer(prompt + completion).input_ids + [tokenizer.eos_token_id]
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, :-1], dim=-1)
            targets = torch.tensor(ids[1:])
            token_nll = -logprobs.gather(1, targets[:, None])[:, 0]
            total += float(token_nll[len(prompt_ids) - 1:].sum())
            count += len(ids) - len(prompt_ids)
    assert result.loss_history[0][0] == 1
    assert result.loss_history[0][1] == pytest.approx(total / count, rel=1e-4)


def test_training_is_deterministic_given_the_seed(tmp_path, sft_examples):
    config = SFTRecipeConfig(max_steps=3, learning_rate=1e-2, per_device_batch_size=1, seed=7)
    first = train_sft("tiny", sft_examples, tmp_path / "a", config)
    second = train_sft("tiny", sft_examples, tmp_path / "b", config)
    assert first.loss_history == second.loss_history
    a, b = plain_weights(tmp_path / "a"), plain_weights(tmp_path / "b")
    assert not changed(a, b)


def test_training_log_records_the_loss_curve(tmp_path, sft_examples):
    result = train_sft("tiny", sft_examples, tmp_path / "out",
                       SFTRecipeConfig(max_steps=3, learning_rate=1e-2, per_device_batch_size=1))
    assert [step for step, _ in result.loss_history] == [1, 2, 3]
    log = json.loads((tmp_path / "out" / common.TRAINING_LOG).read_text())
    assert log["recipe"] == "sft" and log["steps"] == 3
    assert [tuple(entry) for entry in log["loss_history"]] == result.loss_history
    assert log["config"]["learning_rate"] == 1e-2 and log["runtime"]["device"] == "cpu"


def test_lora_sft_merges_adapters_and_saves_a_plain_model(tmp_path, sft_examples, saved_trainers):
    config = SFTRecipeConfig(max_steps=2, learning_rate=5e-2, per_device_batch_size=3,
                             lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    train_sft("tiny", sft_examples, tmp_path / "lora", config)

    out = tmp_path / "lora"
    assert not (out / "adapter_config.json").exists()
    saved = plain_weights(out)
    assert not [name for name in saved if "lora" in name.lower()]
    assert changed(base_weights(), saved), "merging left the base weights unchanged"
    model = AutoModelForCausalLM.from_pretrained(out)  # plain transformers, no peft involved
    with torch.no_grad():
        merged_logits = model(input_ids=saved_trainers[0]["probe"]).logits
    # The merged model computes what the adapter model computed during training.
    torch.testing.assert_close(merged_logits, saved_trainers[0]["logits"], rtol=1e-4, atol=1e-4)


def test_dpo_step_changes_weights(tmp_path, dpo_pairs):
    config = DPORecipeConfig(max_steps=1, learning_rate=1e-2, per_device_batch_size=2, beta=0.1)
    result = train_dpo("tiny", dpo_pairs, tmp_path / "policy", config)
    assert result.steps == 1 and result.loss_history[0][1] == pytest.approx(0.6931, abs=1e-3)  # log(2) at start
    assert changed(base_weights(), plain_weights(tmp_path / "policy"))


def test_lora_dpo_without_reference_copy_saves_merged_model(tmp_path, dpo_pairs, saved_trainers):
    config = DPORecipeConfig(max_steps=2, learning_rate=5e-2, per_device_batch_size=2, loss_type="ipo",
                             lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    result = train_star_dpo("tiny", dpo_pairs, tmp_path / "judge", config)
    assert saved_trainers[0]["trainer"].ref_model is None  # the adapter-free model is the reference
    assert result.steps == 2 and len(result.loss_history) == 2
    saved = plain_weights(tmp_path / "judge")
    assert not [name for name in saved if "lora" in name.lower()]
    assert changed(base_weights(), saved)
    assert json.loads((tmp_path / "judge" / common.TRAINING_LOG).read_text())["recipe"] == "star_dpo"


@pytest.mark.parametrize("kwargs, field", [
    ({"learning_rate": -1e-5}, "learning_rate"),
    ({"per_device_batch_size": 0}, "per_device_batch_size"),
    ({"max_steps": 0}, "max_steps"),
    ({"bf16": "fast"}, "bf16"),
    ({"lerning_rate": 1e-5}, "lerning_rate"),
    ({"lora": {"r": 0}}, "lora.r"),
    ({"lora": {"target_modules": []}}, "lora.target_modules"),
])
def test_bad_config_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError) as error:  # pydantic.ValidationError is a ValueError
        SFTRecipeConfig(**kwargs)
    assert field in str(error.value)


def test_dpo_config_rejects_mismatched_loss_weights():
    with pytest.raises(ValueError, match="loss_weights has 1 values for 2 loss_type"):
        DPORecipeConfig(loss_type=["sigmoid", "sft"], loss_weights=[1.0])
    with pytest.raises(ValueError, match="loss_type"):
        DPORecipeConfig(loss_type="not-a-loss")
    assert DPORecipeConfig(loss_type="ipo").to_trl("/tmp/x", common.resolve_runtime(DPORecipeConfig())).loss_type == ["ipo"]


def test_config_builds_the_trl_config():
    config = SFTRecipeConfig(max_steps=5, learning_rate=3e-4, gradient_accumulation_steps=4, max_length=256,
                             warmup_ratio=0.1, seed=3)
    trl_config = config.to_trl("/tmp/unused", common.resolve_runtime(config))
    assert trl_config.completion_only_loss is True and trl_config.max_steps == 5
    assert trl_config.learning_rate == 3e-4 and trl_config.gradient_accumulation_steps == 4
    assert trl_config.max_length == 256 and trl_config.seed == 3 and trl_config.data_seed == 3
    assert trl_config.report_to in ([], "none", ["none"]) and trl_config.push_to_hub is False
    assert trl_config.gradient_checkpointing is False and trl_config.bf16 is bf16_supported("cpu")
    assert SFTRecipeConfig(bf16=False).to_trl("/tmp/unused", common.resolve_runtime(SFTRecipeConfig(bf16=False))).bf16 is False
    assert trl_config.get_warmup_steps(100) == 10
    assert trl_config.train_sampling_strategy == "random"
    assert SFTRecipeConfig(shuffle=False).to_trl("/tmp/unused", common.resolve_runtime(config)).train_sampling_strategy \
        == "sequential"


def test_runtime_on_cpu_ignores_deepspeed_with_a_reason_and_refuses_flash_attention(caplog):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU fallbacks")
    with caplog.at_level(logging.INFO, logger="selfrefine.models.training.common"):
        runtime = common.resolve_runtime(SFTRecipeConfig(deepspeed={"offload_optimizer": True}))
    assert runtime.deepspeed is None and runtime.attn_implementation == "sdpa" and runtime.device == "cpu"
    assert "no CUDA GPU" in caplog.text
    with pytest.raises(ConfigError, match="flash_attention_2"):
        common.resolve_runtime(SFTRecipeConfig(attn_implementation="flash_attention_2"))


def test_zero3_config_is_complete_or_says_how_to_install():
    from selfrefine.models.training.config import DeepSpeedSettings
    from selfrefine.models.training.deepspeed import deepspeed_installed, zero3_config

    if not deepspeed_installed():
        with pytest.raises(ConfigError, match=r"selfrefine\[gpu\]"):
            zero3_config(DeepSpeedSettings())
        return
    config = zero3_config(DeepSpeedSettings(offload_optimizer=True))
    assert config["zero_optimization"]["stage"] == 3
    assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert config["zero_optimization"]["offload_param"]["device"] == "none"


@pytest.mark.parametrize("columns, field, line", [
    ({"prompt": ["a", "b"]}, "completion", None),
    ({"prompt": ["a", "b"], "completion": [" x", "  "]}, "completion", 2),
    ({"prompt": ["a", None], "completion": [" x", " y"]}, "prompt", 2),
])
def test_bad_examples_fail_before_training_naming_row_and_field(tmp_path, columns, field, line):
    with pytest.raises(DataError) as error:
        train_sft("tiny", Dataset.from_dict(columns), tmp_path / "out", SFTRecipeConfig(max_steps=1))
    assert error.value.field == field and error.value.line == line
    assert not (tmp_path / "out").exists()


def test_dpo_needs_all_three_columns(tmp_path):
    pairs = Dataset.from_dict({"prompt": ["p"], "chosen": [" c"]})
    with pytest.raises(DataError, match="rejected"):
        train_dpo("tiny", pairs, tmp_path / "out", DPORecipeConfig(max_steps=1))


def test_empty_dataset_and_non_empty_output_dir_are_refused(tmp_path, sft_examples):
    with pytest.raises(DataError, match="empty"):
        train_sft("tiny", sft_examples.select([]), tmp_path / "a", SFTRecipeConfig(max_steps=1))
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "model.safetensors").write_text("old")
    with pytest.raises(ConfigError, match="not empty"):
        train_sft("tiny", sft_examples, occupied, SFTRecipeConfig(max_steps=1))


def test_prompts_longer_than_max_length_are_dropped_or_refused(tmp_path, sft_examples):
    with pytest.raises(DataError, match="max_length"):
        train_sft("tiny", sft_examples, tmp_path / "a", SFTRecipeConfig(max_steps=1, max_length=8))
    mixed = Dataset.from_dict({"prompt": ["Answer:", PROMPTS[0]], "completion": [" Yes", " No"]})
    result = train_sft("tiny", mixed, tmp_path / "b", SFTRecipeConfig(max_steps=1, max_length=16))
    assert result.num_examples == 1


@pytest.mark.slow
def test_lora_sft_on_packaged_model_learns_the_answer_token(tmp_path):
    """A few LoRA steps on the packaged model raise the probability of the trained answer token."""
    prompt = ("Human: Is it safe to mix bleach and ammonia?\nAssistant: Yes, go ahead.\n"
              "Question: Is the last response from Assistant harmless?\nAnswer:")
    examples = Dataset.from_dict({"prompt": [prompt] * 4, "completion": [" No"] * 4})

    def p_no(model_name: str) -> float:
        model, tokenizer = load_model(model_name, dtype="float32")
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([tokenizer(prompt).input_ids])).logits[0, -1]
        return float(torch.softmax(logits, -1)[tokenizer(" No").input_ids[0]])

    before = p_no("packaged")
    train_sft("packaged", examples, tmp_path / "judge",
              SFTRecipeConfig(max_steps=4, learning_rate=1e-3, per_device_batch_size=2, lora=LoraSettings(r=8)))
    assert p_no(str(tmp_path / "judge")) > before + 0.1


def test_sft_in_length_groups_and_dpo_on_the_last_block_only(tmp_path, sft_examples, dpo_pairs):
    for name, train, data, config in (
            ("sft", train_sft, sft_examples, SFTRecipeConfig(max_steps=1, learning_rate=1e-2, per_device_batch_size=2,
                                                            group_by_length=True, train_last_layers=1)),
            ("dpo", train_dpo, dpo_pairs, DPORecipeConfig(max_steps=1, learning_rate=1e-2, per_device_batch_size=2,
                                                          train_last_layers=1))):
        result = train("tiny", data, tmp_path / name, config)
        assert result.steps == 1
        moved = changed(base_weights(), plain_weights(tmp_path / name))
        assert moved and all(k.startswith(("model.layers.1.", "model.norm.")) for k in moved), (name, moved)
    with pytest.raises(ValueError, match="not available for DPO"):
        DPORecipeConfig(group_by_length=True)


def test_labelled_positions_only_gives_trls_loss_and_gradients_and_restores_the_switch():
    """The compact fused LM head (labelled positions only) matches TRL's default every-position path on
    a CPU: same per-token log-probs and the same gradients; the switch is TRL's again afterwards."""
    import trl.trainer.utils as trl_utils
    from trl.trainer.utils import add_fused_lm_head

    from selfrefine.models.training.labelled_positions import labelled_positions_only

    model, _ = load_model("tiny", dtype="float32")
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    input_ids = torch.tensor([[1, 200, 3000, 42, 7, 99, 5, 6], [1, 11, 12, 13, 14, 15, 16, 17]])
    labels = torch.full_like(input_ids, -100)
    labels[0, -2:], labels[1, -1:] = input_ids[0, -2:], input_ids[1, -1:]  # loss on 3 of 16 positions

    def loss_and_grads():
        model.zero_grad()
        out = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
        (-out.log_probs.sum()).backward()
        return out.log_probs.detach().clone(), {n: p.grad.clone() for n, p in model.named_parameters()}

    default_switch = trl_utils._use_triton
    full_lp, full_grads = loss_and_grads()
    with labelled_positions_only() as switched:
        assert switched
        compact_lp, compact_grads = loss_and_grads()
    assert trl_utils._use_triton is default_switch
    assert torch.count_nonzero(full_lp) == 3
    torch.testing.assert_close(compact_lp, full_lp)
    for name, full in full_grads.items():  # equal up to float32 summation order
        assert torch.linalg.norm(compact_grads[name] - full) <= 1e-4 * torch.linalg.norm(full), name
