"""The bad-input corpus (`bad_inputs/cases.yaml`): every case, run through the `selfrefine`
command against a store that already holds an evaluation, exits 2 with one clear line on stderr
(no traceback) and leaves every row and every artifact file of the store byte-for-byte unchanged.

Each case gets its own copy of the populated store, so the cases run a few at a time and a
change made by one cannot hide behind another.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine

from tests.reliability.conftest import store_state

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text())
HUGE_LINE_BYTES = 20 * 1024 * 1024
DEEP_NESTING = 100_000  # lists inside lists: far past the JSON decoder's recursion limit
HUGE_INTEGER_DIGITS = 5000  # past Python's default int-string conversion limit of 4300 digits
PARALLEL = 3


def cli_env(home: Path, model_cache: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFREFINE_")}
    # No Prefect server: a case that got past validation would fail here, not start a run.
    env.update({"SELFREFINE_HOME": str(home), "SELFREFINE_MODEL_CACHE": str(model_cache),
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "PREFECT_API_URL": "http://127.0.0.1:9/api"})
    env.update(extra or {})
    return env


def selfrefine(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfrefine", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def home_state(home: Path) -> dict:
    engine = create_engine(f"sqlite:///{home / 'selfrefine.db'}")
    try:
        return store_state(engine, home / "artifacts")
    finally:
        engine.dispose()


def write_generated_inputs(corpus: Path, tiny_model: Path) -> None:
    """The inputs too big or too binary to commit."""
    good = (corpus / "data" / "good_pairs.jsonl").read_bytes().splitlines(keepends=True)
    bad_bytes = b'{"prompt": "caf\xe9 au lait?", "chosen": "Yes.", "rejected": "No.", "dimension": "helpful"}\n'
    (corpus / "data" / "invalid_utf8.jsonl").write_bytes(good[0] + bad_bytes + good[1])
    with open(corpus / "data" / "huge_line.jsonl", "wb") as f:
        f.write(good[0])
        f.write(b'{"prompt": "' + b"a" * HUGE_LINE_BYTES + b'", "chosen": "x", "rejected": "y"}\n')
        f.write(good[1])
    deep = b"[" * DEEP_NESTING + b"]" * DEEP_NESTING
    (corpus / "data" / "deep_nesting.jsonl").write_bytes(
        good[0] + b'{"prompt": ' + deep + b', "chosen": "x", "rejected": "y"}\n' + good[1])
    huge_int = b"9" * HUGE_INTEGER_DIGITS
    (corpus / "data" / "huge_integer.jsonl").write_bytes(
        good[0] + b'{"prompt": "q", "chosen": "x", "rejected": "y", "weight": ' + huge_int + b"}\n" + good[1])
    corrupted = corpus / "models" / "corrupted"
    shutil.copytree(tiny_model, corrupted)
    weights = corrupted / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    pickled = corpus / "models" / "pickled"
    pickled.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model / name, pickled / name)
    (pickled / "pytorch_model.bin").write_bytes(b"PK\x03\x04 a pickle that must never be loaded")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, model_cache) -> Path:
    """A copy of bad_inputs/ with the generated files added."""
    from selfrefine.models.loading import ensure_tiny_model

    copy = tmp_path_factory.mktemp("corpus") / "bad_inputs"
    shutil.copytree(CORPUS, copy)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SELFREFINE_MODEL_CACHE", str(model_cache))
        write_generated_inputs(copy, ensure_tiny_model())
    return copy


@pytest.fixture(scope="module")
def populated_home(tmp_path_factory, model_cache, corpus) -> Path:
    """A store holding one evaluation of the tiny judge: stage runs, artifacts, edges, metrics."""
    home = tmp_path_factory.mktemp("populated") / "home"
    proc = selfrefine(["eval", "--judge", "tiny", "--data", "data/good_pairs.jsonl"],
                      cli_env(home, model_cache), corpus)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return home


@pytest.fixture(scope="module")
def outcomes(populated_home, corpus, model_cache, tmp_path_factory) -> tuple[dict, dict]:
    """The populated store's state, and each case's (process, store state afterwards)."""
    before = home_state(populated_home)
    assert before["tables"]["stage_runs"] and before["tables"]["metrics"] and before["files"]
    homes = tmp_path_factory.mktemp("case-homes")

    def run_case(case: dict):
        home = homes / case["id"]
        shutil.copytree(populated_home, home)
        proc = selfrefine(case["args"], cli_env(home, model_cache, case.get("env")), corpus)
        return proc, home_state(home)

    with ThreadPoolExecutor(PARALLEL) as pool:
        results = dict(zip((c["id"] for c in CASES), pool.map(run_case, CASES)))
    return before, results


def test_the_corpus_is_large_and_its_control_config_is_valid(corpus, model_cache, monkeypatch):
    """The configs break one thing each: the same config without the break passes validation."""
    from selfrefine.flows.config import load_config_file
    from selfrefine.flows.preflight import preflight

    assert len(CASES) >= 20 and len({c["id"] for c in CASES}) == len(CASES)
    monkeypatch.chdir(corpus)
    monkeypatch.setenv("SELFREFINE_MODEL_CACHE", str(model_cache))
    preflight(load_config_file("configs/good.yaml"))


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input_is_one_clear_line_and_leaves_the_store_unchanged(case, outcomes):
    before, results = outcomes
    proc, after = results[case["id"]]
    shown = f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 2, shown
    assert "Traceback" not in proc.stderr and proc.stdout == "", shown
    (line,) = proc.stderr.splitlines()
    assert line.startswith("selfrefine: ") and re.search(case["expect"], line), line
    for secret in case.get("absent", []):
        assert secret not in proc.stderr
    if after != before:  # show what changed, not two whole dumps
        changed = {t: (before["tables"].get(t), after["tables"].get(t)) for t in after["tables"]
                   if after["tables"].get(t) != before["tables"].get(t)}
        files = set(before["files"].items()) ^ set(after["files"].items())
        pytest.fail(f"the store changed: tables {json.dumps(changed)[:3000]}, files {sorted(files)[:20]}")


def test_bad_data_is_reported_before_prefect_or_torch_is_imported(corpus, model_cache, tmp_path):
    """`selfrefine run` validates its data first: a bad file is reported without paying for the
    imports a run needs (Prefect, torch, transformers: seconds a command)."""
    code = ("import sys; from selfrefine.cli import main; rc = main(['run', '--config', 'configs/truncated.yaml']); "
            "print(sorted(m for m in ('prefect', 'torch', 'transformers') if m in sys.modules)); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=corpus, env=cli_env(tmp_path / "home", model_cache),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "truncated last line" in proc.stderr, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
