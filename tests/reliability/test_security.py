"""Security properties: data paths and model directories stay inside their roots, weights are never
unpickled, model checks catch bad weights before a run, servers bind to 127.0.0.1 unless remote
access is asked for, `server stop` signals only the server it started, SQL text is never formatted."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from selfrefine.cli.main import main
from selfrefine.cli.server import is_loopback
from selfrefine.data import DataSource, load_pairs
from selfrefine.data.paths import DATA_ROOT_ENV, data_path
from selfrefine.errors import ModelLoadError, PathEscapeError
from selfrefine.flows.config import load_preset
from selfrefine.flows.preflight import check_model_paths, data_sources
from selfrefine.models.loading import check_model, ensure_tiny_model
from selfrefine.settings import home
from selfrefine.storage.engine import Store
from selfrefine.tasks import ingest
from tests.reliability.conftest import REPO, dump_tables

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
    (data_root / "link.jsonl").symlink_to(tmp_path / "outside.jsonl")
    with pytest.raises(PathEscapeError):
        data_path("link.jsonl")
    # A link or a `..` that stays inside the root is followed.
    (data_root / "inner-link.jsonl").symlink_to(data_root / "sub" / "pairs.jsonl")
    assert data_path("inner-link.jsonl") == data_root / "sub" / "pairs.jsonl"
    assert data_path("sub/../sub/pairs.jsonl") == data_root / "sub" / "pairs.jsonl"


def test_the_shipped_demo_data_stays_readable_under_a_data_root(data_root):
    """The presets read the packaged demo files; an operator's root must not lock them out."""
    cfg = load_preset("tiny")
    _, counts = ingest.prepare(data_sources(cfg), cfg.dimension_definitions)
    assert counts["seed_pairs_0"] == 8 and counts["heldout_pairs_0"] == 6


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


def test_model_directories_in_a_config_obey_the_data_root(data_root, tiny_dir, tmp_path, monkeypatch):
    inside = _copy(tiny_dir, data_root / "models" / "judge")
    outside = _copy(tiny_dir, tmp_path / "outside-model")
    monkeypatch.chdir(tmp_path)
    cfg = load_preset("tiny")
    # Aliases, hub ids, artifact-id-like names and directories inside the root pass.
    for section, field, name in (("train_judge", "base_model", str(inside)),
                                 ("evaluate_policy", "evaluator", "tiny"),
                                 ("evaluate_policy", "base_policy", "HuggingFaceTB/SmolLM2-135M-Instruct"),
                                 ("score_filter", "embedding_model", "packaged"),
                                 ("evaluate", "judge_model", "0123abcd")):
        part = getattr(cfg, section).model_copy(update={field: name})
        check_model_paths(cfg.model_copy(update={section: part}))
    for section, field, name in (("train_judge", "base_model", str(outside)),
                                 ("train_judge", "base_model", "outside-model"),  # relative to the cwd
                                 ("evaluate", "judge_model", "../" + tmp_path.name + "/outside-model"),
                                 ("evaluate_policy", "evaluator", "~/no-such-model"),
                                 ("evaluate_policy", "base_policy", "/etc"),
                                 ("score_filter", "embedding_model", "./outside-model")):
        part = getattr(cfg, section).model_copy(update={field: name})
        with pytest.raises(PathEscapeError, match=rf"outside the allowed root .*\(field '{section}\.{field}'\)"):
            check_model_paths(cfg.model_copy(update={section: part}))
    monkeypatch.delenv(DATA_ROOT_ENV)
    part = cfg.train_judge.model_copy(update={"base_model": str(outside)})
    check_model_paths(cfg.model_copy(update={"train_judge": part}))  # without a root: the user's own files


def test_a_stage_config_sent_to_a_pool_deployment_obeys_the_data_root(data_root, tiny_dir, tmp_path):
    from selfrefine.flows.stage import stage as stage_flow
    from selfrefine.tasks.evaluate_policy import EvaluatePolicyConfig
    from selfrefine.tasks.train_judge import TrainJudgeConfig

    outside = _copy(tiny_dir, tmp_path / "outside-model")
    for stage_name, config in (("train_judge", TrainJudgeConfig(base_model=str(outside))),
                               ("evaluate_policy", EvaluatePolicyConfig(evaluator=str(outside)))):
        field = "base_model" if stage_name == "train_judge" else "evaluator"
        with pytest.raises(PathEscapeError, match=rf"\(field '{stage_name}\.{field}'\)"):
            # The flow's function, as a worker runs it: refused before any input is resolved.
            stage_flow.fn(stage_name, config.model_dump(mode="json"), {}, str(uuid.uuid4()))


def test_a_run_naming_a_model_outside_the_data_root_fails_before_the_store_changes(
        data_root, tiny_dir, tmp_path, capsys):
    outside = _copy(tiny_dir, tmp_path / "outside-model")
    raw = load_preset("tiny").model_dump(mode="json")
    raw["train_judge"]["base_model"] = str(outside)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    store = Store(migrate=True)
    before = dump_tables(store.engine)
    assert main(["run", "--config", str(config), "-n", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("selfrefine: model directory path ")
    assert "(field 'train_judge.base_model')" in err
    assert dump_tables(store.engine) == before
    store.dispose()


def test_the_local_work_pool_sets_a_data_root():
    """UI runs execute on the `local` pool: its jobs confine data and model paths."""
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    local = spec["definitions"]["work_pools"]["local"]
    assert local["job_variables"]["env"][DATA_ROOT_ENV].strip()
    ui_runs = [d for d in spec["deployments"] if d["entrypoint"].startswith("selfrefine/flows/self_refine.py")]
    assert {d["name"] for d in ui_runs} == {"self-refine", "resume"}
    assert all(d["work_pool"] == local for d in ui_runs)


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
    assert args.host == "127.0.0.1" and not args.allow_remote
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "example.com", "localhost.evil.org"))


def test_a_remote_bind_without_allow_remote_is_one_line_and_starts_nothing(capsys):
    assert main(["server", "start", "--host", "0.0.0.0", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("selfrefine: --host 0.0.0.0 is not a loopback address")
    assert "no authentication" in err and "--allow-remote" in err
    assert not (home() / "prefect" / "server.pid").exists()  # start_server writes it before anything else


def _pid_file() -> Path:
    path = home() / "prefect" / "server.pid"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def bystander():
    """A live process that `server stop` must never signal."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    # Until its exec completes, /proc shows no command line (or the parent's): a loaded machine can
    # reach `server stop` inside that window, which would read the process as gone.
    deadline = time.monotonic() + 10
    while b"time.sleep(120)" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("record, message", [
    ("bystander-other-cmdline", "is not the Prefect server `selfrefine server start` launched"),
    ("pid-1", "names pid 1, which is no server this command started"),
    ("pid-0", "names pid 0, which is no server this command started"),
    ("bare-pid", "is not a pid file written by `selfrefine server start`"),
    ("bystander-recorded", "is not a pid file written by `selfrefine server start`"),
])
def test_server_stop_signals_only_the_process_it_started(bystander, capsys, record, message):
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", "4200"]
    if record == "bystander-recorded":  # its own command line, but no Prefect server's
        argv = bystander.args
    pid = {"pid-1": 1, "pid-0": 0}.get(record, bystander.pid)
    _pid_file().write_text(str(pid) if record == "bare-pid" else json.dumps({"pid": pid, "cmdline": argv}))
    assert main(["server", "stop"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "signalled nothing" in err
    assert not _pid_file().exists()  # the stale file is gone: the next `server start` writes its own
    time.sleep(0.5)
    assert bystander.poll() is None  # alive: not signalled


def test_server_stop_ends_the_server_it_recorded(tmp_path, capsys):
    """A stand-in for the server with the very command line `server start` runs and records (a
    `prefect` module that only sleeps, first on the path), so no real server is needed."""
    (tmp_path / "prefect").mkdir()
    (tmp_path / "prefect" / "__main__.py").write_text("import time\ntime.sleep(120)\n")
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", "4200"]
    proc = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(tmp_path)}, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[:-1] != [a.encode() for a in argv]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        _pid_file().write_text(json.dumps({"pid": proc.pid, "cmdline": argv}))
        assert main(["server", "stop"]) == 0
        assert "stopped the local Prefect server" in capsys.readouterr().out
        assert proc.wait(timeout=10) is not None and not _pid_file().exists()
    finally:
        proc.kill()
        proc.wait()


def test_server_stop_with_a_dead_pid_only_removes_the_stale_file(capsys):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", "4200"]
    _pid_file().write_text(json.dumps({"pid": proc.pid, "cmdline": argv}))
    assert main(["server", "stop"]) == 0
    assert "no local Prefect server" in capsys.readouterr().out and not _pid_file().exists()


@pytest.mark.slow
def test_allow_remote_warns_and_stop_ends_the_server_it_started(tmp_path):
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    port = _free_port()
    start = subprocess.run([sys.executable, "-m", "selfrefine", "server", "start", "--host", "0.0.0.0",
                            "--port", str(port), "--allow-remote"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=180)
    pid = json.loads(_pid_file().read_text())["pid"] if _pid_file().exists() else None
    try:
        assert start.returncode == 0, start.stderr[-2000:]
        assert "the Prefect server has no authentication" in start.stderr
        stop = subprocess.run([sys.executable, "-m", "selfrefine", "server", "stop"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0 and "stopped the local Prefect server" in stop.stdout, stop.stderr
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/cmdline").read_bytes() == b""
    finally:
        if pid and Path(f"/proc/{pid}").exists() and b"prefect" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.killpg(pid, 9)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
