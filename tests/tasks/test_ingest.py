"""Data ingest: `ingest.prepare` validates every source before anything is written, and the
`ingest_data` stage stores exactly the validated items, re-ingesting when a source file changes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from selfrefine.data import DataSource, read_jsonl
from selfrefine.errors import DataError
from selfrefine.runtime.inputs import DATA_FILE
from selfrefine.runtime.registry import execute
from selfrefine.storage.schema import Artifact, Metric
from selfrefine.tasks import ingest
from tests.tasks.conftest import DEMO, FIXTURES, TINY, metric_value, read_rows, replace_run, row_counts, stored_paths

INVALID = FIXTURES / "invalid"


def local(path: Path | str, **kwargs) -> DataSource:
    return DataSource(kind="local", path=str(path), **kwargs)


def run_ingest(config, store, artifacts):
    return execute("ingest_data", config, {}, iteration_id=None, seed=None, store=store, artifacts=artifacts)


def stored_items(store, artifacts, art_id, kind, dimensions=None):
    with store.session() as s:
        uri = s.get_one(Artifact, art_id).uri
    return read_jsonl(artifacts.local_path(uri) / DATA_FILE, kind, extra_dimensions=dimensions)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("name", "kind", "line", "field"), [
    ("malformed_json.jsonl", "pairs", 2, None),
    ("truncated_last_line.jsonl", "pairs", 3, None),
    ("missing_field.jsonl", "pairs", 2, "rejected"),
    ("empty_response.jsonl", "pairs", 3, "chosen"),
    ("unknown_dimension.jsonl", "pairs", 2, "dimension"),
    ("empty.jsonl", "pairs", None, None),
    ("invalid_utf8.jsonl", "pairs", 2, None),
    ("bestofn_empty_candidate.jsonl", "bestofn", 2, "candidates[1].output"),
])
def test_bad_data_fails_before_anything_is_written(store, artifacts, name, kind, line, field):
    # The store already holds a run's data, so "nothing new" is not "nothing at all".
    run_ingest(ingest.prepare({"prompts_0": ("prompts", DataSource(kind="demo", limit=2))})[0], store, artifacts)
    before, objects = row_counts(store), stored_paths(artifacts)
    bad = INVALID / name

    with pytest.raises(DataError) as caught:
        # What a run does: validate every source (a good one first), then ingest.
        config, _ = ingest.prepare({"seed_pairs_0": ("pairs", DataSource(kind="demo", limit=4)),
                                    "heldout_pairs_0": (kind, local(bad))})
        run_ingest(config, store, artifacts)

    err = caught.value
    assert (err.path, err.line, err.field) == (str(bad), line, field)
    where = f"{bad}:{line}: " if line is not None else f"{bad}: "
    assert str(err).startswith(where)
    if field is not None:
        assert f"(field '{field}')" in str(err)
    assert row_counts(store) == before and stored_paths(artifacts) == objects


def test_truncated_and_malformed_lines_are_told_apart():
    with pytest.raises(DataError, match="truncated last line"):
        ingest.prepare({"p": ("pairs", local(INVALID / "truncated_last_line.jsonl"))})
    with pytest.raises(DataError, match="malformed JSON") as caught:
        ingest.prepare({"p": ("pairs", local(INVALID / "malformed_json.jsonl"))})
    assert "truncated" not in str(caught.value)


def test_a_missing_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(DataError, match="not found") as caught:
        ingest.prepare({"p": ("pairs", local(missing))})
    assert caught.value.path == str(missing)


def test_ingest_stores_the_validated_items_of_a_local_file(store, artifacts):
    pairs_file, bestofn_file = FIXTURES / "pairs.jsonl", FIXTURES / "bestofn.jsonl"
    config, counts = ingest.prepare({"heldout_0": ("pairs", local(pairs_file)),
                                     "bestofn_0": ("bestofn", local(bestofn_file))})
    assert config.sources["heldout_0"].content_digest == sha256_of(pairs_file)
    assert config.sources["bestofn_0"].content_digest == sha256_of(bestofn_file)
    outcome = run_ingest(config, store, artifacts)
    assert outcome.status == "ran" and set(outcome.outputs) == {"heldout_0", "bestofn_0"}

    raw = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    items = stored_items(store, artifacts, outcome.outputs["heldout_0"], "pairs")
    assert counts["heldout_0"] == len(items) == len(raw)
    for item, record in zip(items, raw):
        assert item.context == [{"role": "user", "content": record["prompt"]}]
        assert (item.chosen, item.rejected) == (record["chosen"], record["rejected"])
        assert (item.dimension, item.source) == (record["dimension"], record["source"])
    bestofn = stored_items(store, artifacts, outcome.outputs["bestofn_0"], "bestofn")
    raw_bestofn = [json.loads(line) for line in bestofn_file.read_text().splitlines()]
    assert [[c.output for c in it.candidates] for it in bestofn] == \
           [[c["output"] for c in r["candidates"]] for r in raw_bestofn]
    assert {it.source for it in bestofn} == {"bestofn"}  # no 'source' field: the file's stem

    with store.session() as s:
        meta = s.get_one(Artifact, outcome.outputs["heldout_0"]).meta
        rows = {(m.labels["role"], m.value) for m in s.query(Metric).filter_by(stage_run_id=outcome.stage_run_id, name="items")}
    assert meta == {"data_kind": "pairs", "items": len(raw), "source_kind": "local", "source": str(pairs_file)}
    assert rows == {("heldout_0", float(len(raw))), ("bestofn_0", float(len(raw_bestofn)))}


def test_an_edited_source_file_is_ingested_again_and_an_unchanged_one_reused(store, artifacts, tmp_path,
                                                                            monkeypatch):
    data = tmp_path / "pairs.jsonl"
    shutil.copy(FIXTURES / "pairs.jsonl", data)
    first = run_ingest(ingest.prepare({"heldout_0": ("pairs", local(data))})[0], store, artifacts)

    with monkeypatch.context() as patch:
        replace_run(patch, "ingest_data", _must_not_run)
        again = run_ingest(ingest.prepare({"heldout_0": ("pairs", local(data))})[0], store, artifacts)
    assert (again.status, again.outputs) == ("reused", first.outputs)

    extra = {"prompt": "Which ocean is the largest?", "chosen": "The Pacific Ocean is the largest.",
             "rejected": "Oceans are wet.", "dimension": "helpful"}
    with open(data, "a", encoding="utf-8") as f:
        f.write(json.dumps(extra) + "\n")
    edited = run_ingest(ingest.prepare({"heldout_0": ("pairs", local(data))})[0], store, artifacts)
    assert edited.status == "ran" and edited.stage_key != first.stage_key
    items = stored_items(store, artifacts, edited.outputs["heldout_0"], "pairs")
    assert len(items) == len(stored_items(store, artifacts, first.outputs["heldout_0"], "pairs")) + 1
    assert items[-1].chosen == extra["chosen"]


def _must_not_run(ctx):
    raise AssertionError("ingest_data ran although an identical stage run is stored")


SPARKLY = {"sparkly": "In conversation, a sparkly Assistant will answer with cheerful enthusiasm."}


def test_a_dimension_defined_in_the_config_is_accepted(store, artifacts):
    config, counts = ingest.prepare({"seed_pairs_0": ("pairs", local(INVALID / "unknown_dimension.jsonl"))},
                                    SPARKLY)
    assert config.dimension_definitions == SPARKLY and counts["seed_pairs_0"] == 3
    outcome = run_ingest(config, store, artifacts)
    items = stored_items(store, artifacts, outcome.outputs["seed_pairs_0"], "pairs", SPARKLY)
    assert [p.dimension for p in items] == ["helpful", "sparkly", "helpful"]


def test_a_dimension_defined_in_the_config_reaches_the_later_stages(store, artifacts):
    from selfrefine.scoring.judge_settings import JudgeSettings
    from selfrefine.tasks.evaluate import EvaluateConfig

    config, _ = ingest.prepare({"heldout_0": ("pairs", local(INVALID / "unknown_dimension.jsonl"))}, SPARKLY)
    data = run_ingest(config, store, artifacts).outputs
    evaluate = EvaluateConfig(judge_model="tiny", judge=JudgeSettings(dtype="float32", device="cpu"),
                              dimension_definitions=SPARKLY)
    outcome = execute("evaluate", evaluate, {"heldout_0": data["heldout_0"]}, iteration_id=None, seed=0,
                      store=store, artifacts=artifacts)
    assert outcome.status == "ran"


def test_limit_keeps_the_first_valid_items_and_changes_the_stage_key(store, artifacts):
    data = FIXTURES / "pairs.jsonl"
    two = run_ingest(ingest.prepare({"p": ("pairs", local(data, limit=2))})[0], store, artifacts)
    three = run_ingest(ingest.prepare({"p": ("pairs", local(data, limit=3))})[0], store, artifacts)
    assert (two.status, three.status) == ("ran", "ran") and two.stage_key != three.stage_key
    raw = [json.loads(line)["chosen"] for line in data.read_text().splitlines()]
    assert [p.chosen for p in stored_items(store, artifacts, two.outputs["p"], "pairs")] == raw[:2]
    assert [p.chosen for p in stored_items(store, artifacts, three.outputs["p"], "pairs")] == raw[:3]


def test_a_root_relative_path_is_pinned_by_the_digest_of_the_file_under_the_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a working directory without the file
    config, counts = ingest.prepare({"p": ("pairs", local("pairs.jsonl", root=str(FIXTURES)))})
    assert counts["p"] == 5
    assert config.sources["p"].content_digest == sha256_of(FIXTURES / "pairs.jsonl")


def test_ingest_writes_the_validated_items_of_each_source(chain):
    demo = {"pairs": read_rows(DEMO / "pairs.jsonl"), "prompts": read_rows(DEMO / "prompts.jsonl"),
            "bestofn": read_rows(DEMO / "bestofn.jsonl")}
    runs = chain.metrics(chain.outcomes["ingest_data"].stage_run_id)
    for role, (kind, source) in {"seed_pairs_0": ("pairs", TINY.data.seed_pairs[0]),
                                 "prompts_0": ("prompts", TINY.data.prompts[0]),
                                 "heldout_pairs_0": ("pairs", TINY.data.heldout_pairs[0]),
                                 "bestofn_0": ("bestofn", TINY.data.bestofn[0])}.items():
        items = read_jsonl(chain.output("ingest_data", role) / DATA_FILE, kind)
        # The demo files are valid: the records after `skip`, at most `limit` of them.
        expected = demo[kind][source.skip:][:source.limit]
        assert len(items) == len(expected) > 0
        for item, raw in zip(items, expected):
            prompt = raw.get("prompt") or raw["instruction"]
            if isinstance(prompt, list):  # a multi-turn context is kept turn by turn
                assert [dict(t) for t in item.context] == [dict(t) for t in prompt]
            else:
                assert item.context[-1] == {"role": "user", "content": prompt}
            assert item.dimension == raw["dimension"] and item.source == "demo"
            if kind == "pairs":
                assert (item.chosen, item.rejected) == (raw["chosen"], raw["rejected"])
            if kind == "bestofn":
                assert [(c.output, c.preference) for c in item.candidates] == \
                       [(c["output"], c["preference"]) for c in raw["candidates"]]
        meta = chain.artifact(chain.outcomes["ingest_data"].outputs[role]).meta
        assert meta["items"] == len(items) and meta["data_kind"] == kind
        assert metric_value(runs, "items", role=role, data_kind=kind) == len(items)
