"""Security properties: data paths stay inside their roots, weights are never unpickled, model
checks catch bad weights before a run, servers bind to 127.0.0.1, SQL text is never formatted."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from selfrefine.data import DataSource, load_pairs
from selfrefine.data.paths import DATA_ROOT_ENV, data_path
from selfrefine.errors import ModelLoadError, PathEscapeError
from selfrefine.models.loading import check_model, ensure_tiny_model

PACKAGE = Path(__file__).resolve().parents[2] / "selfrefine"
PAIR = '{"prompt": "q", "chosen": "a", "rejected": "b", "dimension": "helpful"}\n'


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "data-root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "pairs.jsonl").write_text(PAIR)
    (tmp_path / "outside.jsonl").write_text(PAIR)
    monkeypatch.setenv(DATA_ROOT_ENV, str(root))
    return root


def test_without_roots_a_data_path_is_used_as_given(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    assert data_path(tmp_path / "x.jsonl") == tmp_path / "x.jsonl"


def test_the_operator_data_root_confines_every_data_path(data_root, tmp_path):
    assert data_path("sub/pairs.jsonl") == data_root / "sub" / "pairs.jsonl"
    assert data_path("pairs.jsonl", root="sub") == data_root / "sub" / "pairs.jsonl"
    for path, root in (("../outside.jsonl", None), (str(tmp_path / "outside.jsonl"), None),
                       ("/etc/hostname", None), ("pairs.jsonl", str(tmp_path)), ("x", "../..")):
        with pytest.raises(PathEscapeError, match="outside the allowed root"):
            data_path(path, root)
    outside = tmp_path / "escape-link.jsonl"
    (data_root / "link.jsonl").symlink_to(tmp_path / "outside.jsonl")
    with pytest.raises(PathEscapeError):
        data_path("link.jsonl")
    assert not outside.exists()


def test_loaders_and_hub_file_paths_obey_the_data_root(data_root, tmp_path):
    assert len(load_pairs(DataSource(kind="local", path="sub/pairs.jsonl"))) == 1
    with pytest.raises(PathEscapeError):
        load_pairs(DataSource(kind="local", path=str(tmp_path / "outside.jsonl")))
    with pytest.raises(PathEscapeError):
        load_pairs(DataSource(kind="shp", path=str(tmp_path / "outside.jsonl")))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, model_cache) -> Path:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SELFREFINE_MODEL_CACHE", str(model_cache))
        return ensure_tiny_model()


def _copy(tiny_dir: Path, dest: Path) -> Path:
    shutil.copytree(tiny_dir, dest)
    return dest


def test_check_model_accepts_a_good_directory_and_the_aliases(tiny_dir):
    assert check_model(str(tiny_dir)) == str(tiny_dir)
    assert check_model("tiny") == "tiny"


@pytest.mark.parametrize("damage, message", [
    ("truncate", "not a readable safetensors file"),
    ("garbage", "not a readable safetensors file"),
    ("pickled", "only pickled weights"),
    ("no_config", "has no config.json"),
    ("missing_shard", "shards listed in model.safetensors.index.json are missing"),
])
def test_check_model_catches_bad_weights_without_loading_them(tiny_dir, tmp_path, damage, message):
    model = _copy(tiny_dir, tmp_path / "model")
    weights = model / "model.safetensors"
    if damage == "truncate":
        with open(weights, "r+b") as f:
            f.truncate(weights.stat().st_size - 1)
    elif damage == "garbage":
        weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}" + b"\0" * 64)
    elif damage == "pickled":
        weights.rename(model / "pytorch_model.bin")
    elif damage == "no_config":
        (model / "config.json").unlink()
    elif damage == "missing_shard":
        (model / "model.safetensors.index.json").write_text(json.dumps(
            {"weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(ModelLoadError, match=message):
        check_model(str(model))


def test_an_uncached_hub_id_fails_while_offline(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: True)
    with pytest.raises(ModelLoadError, match="not in the Hugging Face cache"):
        check_model("no-such-org/no-such-model")


def _sources() -> list[tuple[Path, str]]:
    return [(p, p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))]


def test_no_weights_are_ever_unpickled():
    """No torch.load anywhere; every transformers model load asks for safetensors."""
    for path, text in _sources():
        assert not re.search(r"\btorch\.load\(", text), path
        for call in re.finditer(r"AutoModel\w*\.from_pretrained\(([^()]|\([^()]*\))*\)", text):
            if "gguf_file=" not in call.group(0):  # the packaged GGUF file is not a pickle
                assert "use_safetensors=True" in call.group(0), (path, call.group(0))


# PRAGMA values cannot be bound parameters; this one formats a module constant, not input.
FORMATTED_SQL_ALLOWED = {("storage/engine.py", 'execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")')}


def test_sql_text_is_never_built_by_formatting():
    """Statements go through SQLAlchemy constructs with bound parameters, never formatted text."""
    for path, text in _sources():
        where = path.relative_to(PACKAGE).as_posix()
        for match in re.finditer(r"\b(?:text|exec_driver_sql|execute)\(\s*f[\"'][^\n]*", text):
            assert (where, match.group(0).strip()) in FORMATTED_SQL_ALLOWED, (where, match.group(0))
        assert not re.search(r"\b(text|exec_driver_sql)\([^)]*(%|\.format\()", text), where


def test_local_servers_bind_to_localhost_by_default():
    from selfrefine.cli.main import build_parser

    args = build_parser().parse_args(["server", "start"])
    assert args.host == "127.0.0.1"
