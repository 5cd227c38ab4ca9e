"""Model names to models: aliases, local directories, hub ids offline, dtype and the error messages."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from selfrefine.errors import ModelLoadError
from selfrefine.models import loading
from selfrefine.models.loading import load_model, load_tokenizer, resolve_dtype, resolve_model


def test_tiny_alias_resolves_to_cached_directory(tiny_dir, model_cache):
    assert Path(tiny_dir) == model_cache / loading.TINY_DIRNAME
    assert resolve_model("tiny") == tiny_dir
    assert (Path(tiny_dir) / "model.safetensors").is_file()
    assert not list(model_cache.glob(".tiny-llama.tmp-*"))


def test_tiny_model_shape_and_tokenizer(tiny):
    model, tokenizer = tiny
    assert model.config.model_type == "llama"
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (64, 2)
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.pad_token is not None
    assert tokenizer.chat_template  # the packaged model's chat template came along
    assert not model.training


def test_tiny_model_is_deterministic(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SELFREFINE_MODEL_CACHE", str(tmp_path / "other-cache"))
    rebuilt = resolve_model("tiny")
    assert rebuilt != tiny_dir
    first = load_file(Path(tiny_dir) / "model.safetensors")
    second = load_file(Path(rebuilt) / "model.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_local_directory_is_used_as_is(tiny_dir):
    model, tokenizer = load_model(tiny_dir, dtype="float32")
    assert model.dtype == torch.float32
    assert resolve_model(tiny_dir) == str(Path(tiny_dir).resolve())


def test_for_training_keeps_float32_and_train_mode(tiny_dir):
    model, _ = load_model(tiny_dir, for_training=True)
    assert model.training and model.dtype == torch.float32
    assert resolve_dtype("auto", "cpu", for_training=True) == torch.float32
    assert resolve_dtype("bfloat16") == torch.bfloat16
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        resolve_dtype("float8")


def test_auto_dtype_follows_cpu_bf16_support(tiny_dir):
    model, _ = load_model(tiny_dir)
    expected = torch.bfloat16 if loading.bf16_supported("cpu") else torch.float32
    assert model.dtype == expected


def test_missing_directory_names_it():
    with pytest.raises(ModelLoadError, match=r"'\./no-such-model' does not exist.*packaged"):
        load_model("./no-such-model")


def test_unreachable_hub_id_says_how_to_fix():
    # HF_HUB_OFFLINE=1 is set by the autouse fixture: the hub is "unreachable" without network calls.
    with pytest.raises(ModelLoadError) as info:
        load_model("some-org/some-model")
    assert "'some-org/some-model'" in str(info.value)
    assert "local save_pretrained directory" in str(info.value)
    assert "'packaged'" in str(info.value)


def test_pickled_weights_are_refused(tiny_dir, tmp_path):
    """A checkpoint with only pytorch_model.bin is not unpickled: loading fails and says why."""
    model, tokenizer = load_model(tiny_dir, dtype="float32")
    pickled = tmp_path / "pickled"
    model.config.save_pretrained(pickled)
    tokenizer.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safetensors weights"):
        load_model(str(pickled))


def test_file_instead_of_directory(tmp_path):
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="is a file, not a directory"):
        resolve_model(str(weights))


def test_load_tokenizer_alias(tiny_dir):
    tokenizer = load_tokenizer("tiny")
    assert tokenizer(" Yes", add_special_tokens=False)["input_ids"] == \
        load_tokenizer(tiny_dir)(" Yes", add_special_tokens=False)["input_ids"]


def test_build_once_is_atomic_and_serialised_across_processes(tmp_path):
    """Two processes race to build the same directory: exactly one builds, both see the result."""
    target = tmp_path / "cache" / "model"
    log = tmp_path / "builds.log"
    script = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from selfrefine.models.loading import _build_once
        def build(out):
            with open({str(log)!r}, "a") as f:
                f.write(f"{{os.getpid()}}\\n")
            time.sleep(1.0)
            (out / "weights").write_text("done")
        print(_build_once(Path({str(target)!r}), build))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs == [str(target), str(target)]
    assert len(log.read_text().splitlines()) == 1
    assert (target / "weights").read_text() == "done"
    assert not list(target.parent.glob(".model.tmp-*"))


def test_failed_build_leaves_nothing(tmp_path):
    target = tmp_path / "model"

    def build(out):
        (out / "partial").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        loading._build_once(target, build)
    assert not target.exists()
    assert not list(tmp_path.glob(".model.tmp-*"))


@pytest.mark.slow
def test_packaged_model_loads_and_answers(tmp_path):
    model, tokenizer = load_model("packaged", dtype="float32")
    assert model.config.num_hidden_layers == 30
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0][ids["input_ids"].shape[1]:])
