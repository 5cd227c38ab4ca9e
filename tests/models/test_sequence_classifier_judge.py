"""A public sequence-classification reward model as a judge, checked against a tiny random-weight
`LlamaForSequenceClassification` saved with the packaged tokenizer."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from selfrefine.errors import ModelLoadError
from selfrefine.models.judge_kind import load_judge
from selfrefine.models.loading import TINY_ARCH, TINY_SEED
from selfrefine.models.sequence_classifier_judge import SequenceClassifierJudge

CONTEXT = [{"role": "user", "content": "What is the capital of France?"}]
RESPONSES = ["Paris.", "The capital of France is Paris, a city on the Seine.", "Lyon", "I do not know, sorry."]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _save_classifier(out: Path, tokenizer, num_labels: int) -> Path:
    from transformers import LlamaConfig, LlamaForSequenceClassification

    arch = {**TINY_ARCH, "hidden_size": 16, "intermediate_size": 32}
    config = LlamaConfig(vocab_size=len(tokenizer), num_labels=num_labels, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **arch)
    with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG left as it was
        torch.manual_seed(TINY_SEED)
        model = LlamaForSequenceClassification(config)
        with torch.no_grad():
            for param in model.parameters():
                if param.dim() > 1:
                    param.normal_(0.0, 0.2)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def rm_dir(tiny_dir, tmp_path_factory) -> str:
    from selfrefine.models.loading import load_tokenizer

    return str(_save_classifier(tmp_path_factory.mktemp("seqcls"), load_tokenizer(tiny_dir), num_labels=1))


@pytest.fixture(scope="module")
def judge(rm_dir) -> SequenceClassifierJudge:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        return load_judge(rm_dir, dtype="float32", device="cpu", batch_size=4)


def _reference_rewards(rm_dir: str, responses: list[str]) -> list[float]:
    """Logits of the model loaded directly, one unpadded conversation at a time."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir, dtype=torch.float32).eval()
    rewards = []
    for response in responses:
        text = tokenizer.apply_chat_template([*CONTEXT, {"role": "assistant", "content": response}], tokenize=False)
        with torch.no_grad():
            rewards.append(model(**tokenizer(text, return_tensors="pt")).logits[0, 0].item())
    return rewards


def test_load_judge_dispatches_to_sequence_classifier(judge, rm_dir):
    assert isinstance(judge, SequenceClassifierJudge)
    assert judge.kind == "sequence_classifier"
    assert judge.describe() == {"model": rm_dir, "kind": "sequence_classifier"}


def test_rewards_match_direct_logits(judge, rm_dir):
    scores = judge.score_absolute([{"context": CONTEXT, "response": r} for r in RESPONSES])
    expected = _reference_rewards(rm_dir, RESPONSES)
    assert [s.score for s in scores] == pytest.approx(expected, abs=1e-5)
    assert len(set(round(r, 6) for r in expected)) == len(expected)  # the random model tells them apart
    for s in scores:
        assert s.answer == ("Yes" if s.score >= 0 else "No")
        assert s.p_yes == pytest.approx(1 / (1 + math.exp(-s.score)))


def test_batch_size_does_not_change_rewards(rm_dir):
    items = [{"context": CONTEXT, "response": r} for r in RESPONSES]
    one = SequenceClassifierJudge.from_pretrained(rm_dir, dtype="float32", device="cpu", batch_size=1)
    four = SequenceClassifierJudge.from_pretrained(rm_dir, dtype="float32", device="cpu", batch_size=4)
    assert [s.score for s in four.score_absolute(items)] == pytest.approx(
        [s.score for s in one.score_absolute(items)], abs=1e-5)


def test_compare_is_bradley_terry_in_both_orders(judge):
    a, b = RESPONSES[0], RESPONSES[1]
    r_a, r_b = (s.score for s in judge.score_absolute([{"context": CONTEXT, "response": r} for r in (a, b)]))
    forward, swapped = judge.compare([{"context": CONTEXT, "response_a": a, "response_b": b},
                                      {"context": CONTEXT, "response_a": b, "response_b": a}])
    assert forward.p_a == pytest.approx(1 / (1 + math.exp(-(r_a - r_b))))
    assert forward.p_a == forward.p_a_forward == forward.p_a_swapped
    assert swapped.p_a == pytest.approx(1 - forward.p_a)
    assert forward.consistent and swapped.consistent
    assert forward.verdict == ("A" if r_a >= r_b else "B")


def test_overlong_input_is_truncated_from_the_left(rm_dir, caplog):
    short = SequenceClassifierJudge.from_pretrained(rm_dir, dtype="float32", device="cpu", max_length=64)
    long_response = " ".join(f"word{i}" for i in range(200)) + " THE END"
    with caplog.at_level(logging.WARNING, logger="selfrefine.models.sequence_classifier_judge"):
        scores = short.score_absolute([{"context": CONTEXT, "response": long_response},
                                       {"context": CONTEXT, "response": "ok"}])
    assert len(scores) == 2 and all(math.isfinite(s.score) for s in scores)
    assert short.truncated == 1
    assert len([r for r in caplog.records if "max_length" in r.getMessage()]) == 1
    text = short.render(CONTEXT, long_response)
    ids, cut = short.encode(text)
    full = short.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert cut and len(ids) == 64 and ids[-63:] == full[-63:]  # the end is kept, the oldest tokens go


def test_multi_label_classifier_is_refused(tiny_dir, tmp_path):
    from selfrefine.models.loading import load_tokenizer

    out = _save_classifier(tmp_path / "two-labels", load_tokenizer(tiny_dir), num_labels=2)
    with pytest.raises(ModelLoadError, match="num_labels=2"):
        load_judge(str(out), dtype="float32", device="cpu")
