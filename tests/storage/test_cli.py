"""`selfrefine runs | show | lineage | db` on a small store."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from selfrefine.cli import main
from selfrefine.runtime.runner import run_stage
from selfrefine.runtime.stage import Stage
from selfrefine.storage import repository as repo
from selfrefine.storage.engine import Store
from tests.storage.stagefns import CountConfig, upper_dir, write_text

MIGRATIONS = Path(__file__).parents[2] / "selfrefine" / "storage" / "migrations" / "versions"


@pytest.fixture
def small_run(db_url):
    store = Store(db_url, migrate=True)
    with store.session() as s:
        run = repo.create_run(s, name="cli-run", n_iterations=2, config={}, config_digest="d")
        its = [repo.get_or_create_iteration(s, run.id, i) for i in (1, 2)]
    a = run_stage(Stage("write", "1", CountConfig, write_text), CountConfig(), {}, iteration_id=its[0].id, store=store)
    b = run_stage(Stage("upper", "1", CountConfig, upper_dir), CountConfig(), {"data": a.outputs["data"]},
                  iteration_id=its[0].id, store=store)
    c = run_stage(Stage("write", "1", CountConfig, write_text), CountConfig(text="other"), {},
                  iteration_id=its[1].id, store=store)
    d = run_stage(Stage("upper", "1", CountConfig, upper_dir), CountConfig(), {"data": c.outputs["data"]},
                  iteration_id=its[1].id, store=store)
    yield run, (a, b, c, d)
    store.dispose()


def test_runs_and_show(small_run, capsys):
    run, outcomes = small_run
    assert main(["runs", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in listed] == [str(run.id)]
    assert main(["show", str(run.id)[:8], "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [it["index"] for it in report["iterations"]] == [1, 2]
    assert [st["stage"] for st in report["iterations"][0]["stages"]] == ["write", "upper"]
    assert report["iterations"][0]["stages"][0]["metrics"][0]["name"] == "chars"
    assert main(["show", str(run.id), "--verbose"]) == 0
    text = capsys.readouterr().out
    assert "iteration 2" in text and "sha256:" in text


def test_lineage_of_a_model_reaches_its_data_and_nothing_from_the_other_iteration(small_run, capsys):
    run, (a, b, c, d) = small_run
    model_id = str(b.outputs["model"])
    assert main(["lineage", model_id, "--json"]) == 0
    graph = json.loads(capsys.readouterr().out)
    ids = {x["id"] for x in graph["artifacts"]}
    assert ids == {model_id, str(a.outputs["data"])}
    assert {s["stage"] for s in graph["stage_runs"]} == {"write", "upper"}
    assert all(s["iteration"] == 1 for s in graph["stage_runs"])
    assert main(["lineage", str(a.outputs["data"])[:8]]) == 0
    tree = capsys.readouterr().out
    assert "descendants:" in tree and "→ makes model" in tree


def test_lineage_by_digest_prefix(small_run, capsys):
    from selfrefine.storage.schema import Artifact

    run, (a, *_rest) = small_run
    with Store().session() as s:
        digest = s.get_one(Artifact, a.outputs["data"]).sha256
    assert main(["lineage", f"sha256:{digest[:12]}", "--json"]) == 0
    assert str(a.outputs["data"]) in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["lineage", "deadbeef"], "no run, iteration, stage run or artifact matches"),
    (["lineage", "zz"], "is not an id"),
    (["show", "00000000-0000-0000-0000-000000000000"], "has id"),
])
def test_unknown_ids_give_one_line_and_a_non_zero_exit(small_run, capsys, argv, message):
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_show_refuses_a_non_run(small_run, capsys):
    _, (a, *_rest) = small_run
    assert main(["show", str(a.outputs["data"])]) != 0
    assert "not a run" in capsys.readouterr().err


def test_bad_arguments_exit_2_with_one_line(selfrefine_home):
    proc = subprocess.run([sys.executable, "-m", "selfrefine", "nonsense"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("selfrefine: ") and proc.stderr.count("\n") == 1


def test_unreachable_database_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.setenv("SELFREFINE_DB_URL", "postgresql+psycopg://user:hunter2@127.0.0.1:1/nope")
    assert main(["runs"]) != 0
    err = capsys.readouterr().err
    assert "cannot reach the database" in err and "hunter2" not in err and err.count("\n") == 1


def test_db_upgrade_and_current(db_url, capsys):
    assert main(["db", "upgrade"]) == 0
    assert main(["db", "current"]) == 0
    out = capsys.readouterr().out
    # Upgraded to the newest migration: the current revision is the head.
    current = re.search(r"revision (\w+) \(head (\w+)\)", out)
    assert current and current.group(1) == current.group(2) == sorted(
        p.name.split("_")[0] for p in MIGRATIONS.glob("0*.py"))[-1]


def test_commands_that_load_no_model_leave_transformers_unimported_and_its_bars_off(selfrefine_home):
    """`selfrefine runs` (and every command that reads only the store) never imports transformers or
    torch; a command that does import it later finds its progress bars already off."""
    code = ("import sys; from selfrefine.cli import main; rc = main(['runs']); "
            "assert rc == 0, rc; assert 'transformers' not in sys.modules and 'torch' not in sys.modules, 'imported'; "
            "from transformers.utils import logging; print(logging.is_progress_bar_enabled())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_a_refused_resume_is_refused_before_prefect_is_imported(small_run):
    """`selfrefine resume` checks the run first (it exists, its config still gives its digest, no live
    process drives it): a refusal is one clear line without the seconds Prefect's import costs."""
    run, _ = small_run  # its stored config ({}) is not a run config the schema reads
    code = (f"import sys; from selfrefine.cli import main; rc = main(['resume', '{run.id}']); "
            "print(sorted(m for m in ('prefect', 'torch', 'transformers') if m in sys.modules)); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"selfrefine: run {run.id}'s stored config") and "--config FILE" in line, line
    assert proc.stdout.strip() == "[]"
