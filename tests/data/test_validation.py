"""Every validation error names the file, the 1-based line and the field, before any stage runs."""

from __future__ import annotations

import gzip
import logging

import pytest

from selfrefine.data import DataSource, DataValidationError, load_pairs, read_local, validate_bestofn
from selfrefine.data import validate_pairs, validate_prompts
from selfrefine.errors import DataError, UnknownDimensionError
from tests.data.helpers import hh

GOOD = {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}


def pair_error(path, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        validate_pairs(path, dimension="helpful", **kwargs)
    return info.value


@pytest.mark.parametrize("bad_line, field, message", [
    ('{"prompt": "q", "chosen": "a", "rejected": ', None, "malformed JSON"),
    ('["prompt", "chosen"]', None, "expected a JSON object (JSONL has one object per line), got list"),
    ({"prompt": "q", "chosen": 4, "rejected": "b"}, "chosen", "expected a string or a list"),
    ({"prompt": 7, "chosen": "a", "rejected": "b"}, "prompt", "expected a string or a list"),
    ({"prompt": "q", "chosen": "a"}, "rejected", "missing"),
    ({"prompt": "q", "rejected": "a"}, "chosen", "missing"),
    ({"prompt": "q", "chosen": "   \n\t", "rejected": "b"}, "chosen", "empty response"),
    ({"prompt": "q", "chosen": "a", "rejected": ""}, "rejected", "empty response"),
    ({"prompt": "q", "chosen": "same", "rejected": " same "}, "rejected", "same text"),
    ({"prompt": "   ", "chosen": "a", "rejected": "b"}, "prompt", "empty prompt"),
    ({"prompt": "q", "chosen": "a", "rejected": "b", "dimension": "sparkly"}, "dimension",
     "unknown dimension 'sparkly'; known dimensions: "),
    ({"prompt": "q", "chosen": "a", "rejected": "b", "dimension": 3}, "dimension", "expected a string"),
    ({"chosen": hh("Only a question"), "rejected": hh("Only a question")}, "chosen",
     "no Assistant turn"),
    ({"chosen": hh("q", "a"), "rejected": 5}, "rejected", "expected a string"),
    ({"prompt": [{"role": "robot", "content": "x"}], "chosen": "a", "rejected": "b"},
     "prompt[0].role", "unknown role 'robot'"),
])
def test_bad_record_names_file_line_and_field(write_lines, bad_line, field, message):
    path = write_lines("pairs.jsonl", [GOOD, GOOD, bad_line, GOOD])
    err = pair_error(path)
    assert (err.path, err.line, err.field) == (str(path), 3, field)
    assert message in str(err)
    assert str(err).startswith(f"{path}:3: ")


def test_truncated_last_line_is_reported_as_such(write_lines):
    path = write_lines("cut.jsonl", [GOOD, '{"prompt": "q", "chosen": "a", "rej'], final_newline=False)
    err = pair_error(path)
    assert err.line == 2 and "truncated last line" in str(err)


def test_invalid_utf8_names_the_line(write_lines):
    path = write_lines("latin1.jsonl", [GOOD, '{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}'
                                        .encode("latin-1")])
    err = pair_error(path)
    assert err.line == 2 and "invalid UTF-8" in str(err)


def test_a_line_over_the_size_guard_is_an_error_not_a_memory_blow_up(write_lines):
    huge = {"prompt": "q", "chosen": "x" * 5000, "rejected": "b"}
    path = write_lines("big.jsonl", [GOOD, huge, GOOD])
    err = pair_error(path, max_line_bytes=1024)
    assert err.line == 2 and "max_line_bytes=1024" in str(err)
    assert len(validate_pairs(path, dimension="helpful", max_line_bytes=8192)) == 3


def test_missing_dimension_without_a_default_says_how_to_fix_it(write_lines):
    path = write_lines("nodim.jsonl", [GOOD])
    with pytest.raises(DataError, match="DataSource.dimension") as info:
        validate_pairs(path)
    assert (info.value.line, info.value.field) == (1, "dimension")


def test_unknown_default_dimension_fails_before_reading(tmp_path):
    source = DataSource(kind="local", path=str(tmp_path / "does-not-exist.jsonl"), dimension="sparkly")
    with pytest.raises(UnknownDimensionError, match="known dimensions"):
        load_pairs(source)


def test_config_defined_dimensions_are_accepted(write_lines):
    path = write_lines("extra.jsonl", [dict(GOOD, dimension="concise")])
    pairs = validate_pairs(path, extra_dimensions={"concise": "In conversation, a concise Assistant "
                                                               "will answer in few words."})
    assert pairs[0].dimension == "concise"


@pytest.mark.parametrize("lines", [[], ["", "  "]])
def test_an_empty_set_is_an_error(write_lines, lines):
    path = write_lines("empty.jsonl", lines, final_newline=bool(lines))
    with pytest.raises(DataError, match="no items") as info:
        validate_pairs(path, dimension="helpful")
    assert info.value.path == str(path)


def test_several_problems_are_reported_together(write_lines):
    rows = [GOOD, dict(GOOD, chosen=""), GOOD, "{oops", dict(GOOD, rejected="4")]
    path = write_lines("many.jsonl", rows)
    with pytest.raises(DataValidationError) as info:
        validate_pairs(path, dimension="helpful")
    err = info.value
    assert [(e.line, e.field) for e in err.errors] == [(2, "chosen"), (4, None), (5, "rejected")]
    assert (err.line, err.field) == (2, "chosen")
    assert "2 more problem(s)" in str(err) and "line 4: malformed JSON" in str(err)


def test_max_errors_stops_reading(write_lines):
    path = write_lines("bad.jsonl", [dict(GOOD, chosen="")] * 10)
    with pytest.raises(DataValidationError, match="stopped reading after 3") as info:
        validate_pairs(path, dimension="helpful", max_errors=3)
    assert len(info.value.errors) == 3


def test_skip_mode_drops_invalid_records_and_counts_them(write_lines, caplog):
    rows = [GOOD, dict(GOOD, chosen=" "), dict(GOOD, prompt="Other?"), dict(GOOD, rejected="4")]
    path = write_lines("mixed.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="selfrefine.data.validate"):
        result = read_local("pairs", path, dimension="helpful", on_invalid="skip")
    assert [p.context[0]["content"] for p in result.items] == ["What is 2+2?", "Other?"]
    assert [(e.line, e.field) for e in result.skipped] == [(2, "chosen"), (4, "rejected")]
    assert "skipped 2 invalid record(s)" in caplog.text


def test_skip_mode_never_hides_syntax_errors_or_unknown_dimensions(write_lines):
    for bad in ("{oops", dict(GOOD, dimension="sparkly")):
        path = write_lines("s.jsonl", [GOOD, bad])
        with pytest.raises(DataError) as info:
            read_local("pairs", path, dimension="helpful", on_invalid="skip")
        assert info.value.line == 2


def test_skip_mode_with_nothing_valid_is_still_an_empty_set(write_lines):
    path = write_lines("allbad.jsonl", [dict(GOOD, chosen="")])
    with pytest.raises(DataError, match="no items.*1 invalid record"):
        read_local("pairs", path, dimension="helpful", on_invalid="skip")


def test_prompt_and_bestofn_errors_name_their_fields(write_lines):
    path = write_lines("p.jsonl", [{"prompt": "ok"}, {"prompt": [{"role": "user", "content": "q"},
                                                                 {"role": "assistant", "content": "a"}]}])
    with pytest.raises(DataError, match="must end with a user turn") as info:
        validate_prompts(path, dimension="helpful")
    assert (info.value.line, info.value.field) == (2, "prompt")
    path = write_lines("p2.jsonl", [{"text": "no prompt here"}])
    with pytest.raises(DataError) as info:
        validate_prompts(path, dimension="helpful")
    assert (info.value.line, info.value.field) == (1, "prompt")

    cands = [{"output": "a", "preference": 1.5}, {"output": "b", "preference": 2.5}]
    path = write_lines("b.jsonl", [{"instruction": "q", "candidates": cands}])
    with pytest.raises(DataError, match="outside \\[1, 2\\]") as info:
        validate_bestofn(path, dimension="helpful")
    assert info.value.field == "candidates[1].preference"
    for candidates, field in (([{"output": "a", "preference": 1}], "candidates"),
                              ([{"output": "a", "preference": 1}, {"output": " ", "preference": 2}],
                               "candidates[1].output"),
                              ([{"output": "a", "preference": "high"}, {"output": "b", "preference": 2}],
                               "candidates[0].preference")):
        path = write_lines("b.jsonl", [{"instruction": "q", "candidates": candidates}])
        with pytest.raises(DataError) as info:
            validate_bestofn(path, dimension="helpful")
        assert info.value.field == field


def test_file_level_problems(tmp_path, write_lines):
    with pytest.raises(DataError, match="not found"):
        validate_pairs(tmp_path / "nope.jsonl", dimension="helpful")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported data file type"):
        validate_pairs(tmp_path / "data.csv", dimension="helpful")
    good = gzip.compress(("\n".join(['{"prompt": "q%d", "chosen": "a", "rejected": "b"}' % i
                                     for i in range(200)]) + "\n").encode())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip") as info:
        validate_pairs(cut, dimension="helpful")
    assert info.value.path == str(cut)
    (tmp_path / "fake.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="not valid parquet"):
        validate_pairs(tmp_path / "fake.parquet", dimension="helpful")


def test_a_local_pair_file_carries_gaps_and_a_bad_one_names_its_line(write_lines):
    rows = [dict(GOOD, gap=0.5), GOOD]
    assert [p.gap for p in load_pairs(DataSource(kind="local", path=str(write_lines("graded.jsonl", rows)),
                                                         dimension="helpful"))] == [0.5, None]
    err = pair_error(write_lines("bad_gap.jsonl", [GOOD, dict(GOOD, gap=-1)]))
    assert err.line == 2 and err.field == "gap" and "bad_gap.jsonl" in str(err)
