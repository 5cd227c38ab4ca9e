"""Weight averaging of two judge checkpoints (WARM): the tensors of every safetensors file are the
weighted mean, in the newer checkpoint's dtype; the result loads and scores as a judge; checkpoints
of different shapes are refused before anything is written."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from selfrefine.errors import ModelLoadError
from selfrefine.models.judge_info import JUDGE_INFO
from selfrefine.models.judge_kind import load_judge
from selfrefine.models.judge_types import AbsoluteItem
from selfrefine.models.loading import load_tokenizer
from selfrefine.models.reward_head import HEAD_FILE, RewardHeadModel
from selfrefine.models.weight_average import average_checkpoints


def _reward_judge(tiny_dir, out, seed: int, *, head: str = "linear", dtype=torch.float32):
    """A reward-head judge saved in `out`: the tiny backbone moved off its weights by a seeded step."""
    lm = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    RewardHeadModel.for_training(lm.to(dtype), tiny_dir, head, 32, seed=seed).save_pretrained(out)
    load_tokenizer(tiny_dir).save_pretrained(out)
    return out


@pytest.mark.parametrize("newer_weight", [0.5, 0.25])
def test_every_tensor_is_the_weighted_mean_and_the_average_scores_as_a_judge(tiny_dir, tmp_path, newer_weight):
    older, newer = _reward_judge(tiny_dir, tmp_path / "older", 1), _reward_judge(tiny_dir, tmp_path / "newer", 2)
    out = average_checkpoints(older, newer, tmp_path / "averaged", newer_weight)
    for name in ("model.safetensors", HEAD_FILE):
        a, b, mean = (load_file(str(d / name)) for d in (older, newer, out))
        assert mean.keys() == b.keys()
        assert any(not torch.equal(a[k], b[k]) for k in b)
        for k in b:
            torch.testing.assert_close(mean[k], (1 - newer_weight) * a[k] + newer_weight * b[k])
    assert json.loads((out / JUDGE_INFO).read_text()) == json.loads((newer / JUDGE_INFO).read_text())
    judge = load_judge(str(out), dtype="float32", device="cpu")
    rewards = [s.score for s in judge.score_absolute([AbsoluteItem([{"role": "user", "content": "Hi"}], r)
                                                      for r in ("Hello!", "Go away.")])]
    assert len(rewards) == 2 and all(map(torch.isfinite, torch.tensor(rewards)))


def test_the_average_keeps_the_newer_checkpoints_dtype(tiny_dir, tmp_path):
    older = _reward_judge(tiny_dir, tmp_path / "older", 1)
    newer = _reward_judge(tiny_dir, tmp_path / "newer", 2, dtype=torch.bfloat16)
    out = average_checkpoints(older, newer, tmp_path / "averaged")
    a, b, mean = (load_file(str(d / "model.safetensors")) for d in (older, newer, out))
    assert {t.dtype for t in b.values()} == {t.dtype for t in mean.values()} == {torch.bfloat16}
    k = next(iter(b))
    torch.testing.assert_close(mean[k], ((a[k] + b[k].float()) / 2).to(torch.bfloat16))


def test_checkpoints_of_different_shapes_are_refused_before_anything_is_written(tiny_dir, tmp_path):
    older = _reward_judge(tiny_dir, tmp_path / "older", 1, head="linear")
    newer = _reward_judge(tiny_dir, tmp_path / "newer", 2, head="mlp")
    with pytest.raises(ModelLoadError, match=f"{HEAD_FILE} has tensor .* in only one"):
        average_checkpoints(older, newer, tmp_path / "averaged")
    assert not (tmp_path / "averaged").exists()
    (older / HEAD_FILE).unlink()
    with pytest.raises(ModelLoadError, match="different weight files"):
        average_checkpoints(older, newer, tmp_path / "averaged")
    assert not (tmp_path / "averaged").exists()
