"""Records that are well-formed JSON yet cannot be used: nesting or integer literals past the
decoder's limits, text that UTF-8 cannot encode (lone surrogates from `\\u` escapes), non-finite
numbers where numbers are read. Each is one `DataError` naming file, line and (where there is one)
field; with `on_invalid="skip"` each is one skipped record."""

from __future__ import annotations

import logging
import sys

import pytest

from selfrefine.data import PreferencePair, read_local, turn, validate_bestofn, validate_pairs
from selfrefine.data.hub_rows import oasst_pairs, webgpt_pair
from selfrefine.data.validate import collect
from selfrefine.errors import DataError

GOOD = '{"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}'
DEEP = '{"prompt": ' + "[" * 100_000 + "]" * 100_000 + ', "chosen": "a", "rejected": "b"}'
HUGE_INT = '{"prompt": "q", "chosen": "a", "rejected": "b", "weight": 1' + "0" * 5000 + "}"
# Written as the JSON text itself: json.dumps would refuse nothing and escape nothing here.
SURROGATE_PROMPT = '{"prompt": "caf\\ud800", "chosen": "a", "rejected": "b"}'


@pytest.mark.parametrize("bad_line, field, message", [
    (DEEP, None, "JSON nested too deeply for the decoder"),
    (HUGE_INT, None, f"integer literal has more than {sys.get_int_max_str_digits()} digits"),
    (SURROGATE_PROMPT, "prompt", "cannot be encoded as UTF-8: a lone surrogate '\\ud800' at character 4"),
    ('{"prompt": "q", "chosen": "a\\udfff", "rejected": "b"}', "chosen", "lone surrogate"),
    ('{"prompt": [{"role": "user", "content": "\\ud83d"}], "chosen": "a", "rejected": "b"}',
     "prompt[0].content", "lone surrogate '\\ud83d'"),
    ('{"chosen": "\\n\\nHuman: q\\n\\nAssistant: a\\ud800", "rejected": "\\n\\nHuman: q\\n\\nAssistant: b"}',
     "chosen", "lone surrogate"),
    ('{"prompt": "q", "chosen": "a", "rejected": "b", "source": "s\\udc80"}', "source", "lone surrogate"),
], ids=["deep", "huge-int", "surrogate-prompt", "surrogate-chosen", "surrogate-turn", "surrogate-hh",
        "surrogate-source"])
def test_record_past_a_limit_is_one_error_naming_the_line(write_lines, bad_line, field, message):
    path = write_lines("pairs.jsonl", [GOOD, GOOD, bad_line, GOOD])
    with pytest.raises(DataError) as info:
        validate_pairs(path, dimension="helpful")
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), 3, field)
    assert str(err).startswith(f"{path}:3: ") and message in str(err)
    assert "\n" not in str(err)
    str(err).encode("utf-8")  # the message itself can be printed and stored


def test_a_valid_surrogate_pair_is_ordinary_text(write_lines):
    path = write_lines("emoji.jsonl", ['{"prompt": "smile \\ud83d\\ude00", "chosen": "a", "rejected": "b"}'])
    (pair,) = validate_pairs(path, dimension="helpful")
    assert pair.context[0]["content"] == "smile \U0001F600"


@pytest.mark.parametrize("literal, shown", [
    ("NaN", "expected a finite number, got nan"), ("Infinity", "expected a finite number, got inf"),
    ("-Infinity", "expected a finite number, got -inf"), ("1e999", "expected a finite number, got inf"),
    ("1" + "0" * 400, "number too large for a float"),
])
def test_non_finite_preference_names_its_field(write_lines, literal, shown):
    line = ('{"instruction": "q", "candidates": [{"output": "a", "preference": 1}, '
            '{"output": "b", "preference": ' + literal + '}]}')
    path = write_lines("bon.jsonl", [line])
    with pytest.raises(DataError) as info:
        validate_bestofn(path, dimension="helpful")
    assert (info.value.line, info.value.field) == (1, "candidates[1].preference")
    assert shown in str(info.value)


def test_non_finite_preference_in_parquet_names_its_row(write_parquet):
    cands = [{"output": "a", "preference": 1.0}, {"output": "b", "preference": float("nan")}]
    path = write_parquet("bon.parquet", [{"instruction": "q", "candidates": cands}])
    with pytest.raises(DataError) as info:
        validate_bestofn(path, dimension="helpful")
    assert (info.value.line, info.value.field) == (1, "candidates[1].preference")


@pytest.mark.parametrize("score", [float("nan"), float("inf")])
def test_hub_scores_must_be_finite(score):
    row = {"question": {"full_text": "q"}, "answer_0": "a", "answer_1": "b", "score_0": score, "score_1": 1.0}
    with pytest.raises(DataError, match="expected a finite number") as info:
        webgpt_pair(row, dimension="helpful", source="webgpt")
    assert info.value.field == "score_0"


def test_skip_mode_drops_each_unusable_record_once_and_counts_it(write_lines, caplog):
    nan_label = '{"prompt": "q", "chosen": "a", "rejected": "b", "dimension": NaN}'
    rows = [GOOD, DEEP, GOOD.replace("2+2", "3+3"), SURROGATE_PROMPT, HUGE_INT, nan_label,
            GOOD.replace("2+2", "4+4")]
    path = write_lines("mixed.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="selfrefine.data.validate"):
        result = read_local("pairs", path, dimension="helpful", on_invalid="skip")
    assert [p.context[0]["content"] for p in result.items] == ["What is 2+2?", "What is 3+3?", "What is 4+4?"]
    assert [(e.line, e.field) for e in result.skipped] == [(2, None), (4, "prompt"), (5, None), (6, "dimension")]
    assert "skipped 4 invalid record(s)" in caplog.text


def test_skip_mode_still_stops_at_malformed_json(write_lines):
    path = write_lines("s.jsonl", [GOOD, DEEP, "{oops", GOOD])
    with pytest.raises(DataError, match="malformed JSON") as info:
        read_local("pairs", path, dimension="helpful", on_invalid="skip")
    assert info.value.line == 3


def _unchecked_pair(raw: dict) -> PreferencePair:
    """A converter without field checks: building the item hashes the raw text."""
    return PreferencePair([turn("user", raw["q"])], "a", "b", "helpful", "s")


def test_an_error_no_field_check_foresaw_is_still_one_record_problem():
    records = [(1, {"q": "fine"}), (2, {"q": "bad \ud800"}), (3, {"q": "also fine"})]
    with pytest.raises(DataError) as info:
        collect(records, _unchecked_pair, where="rows.jsonl")
    assert str(info.value).startswith("rows.jsonl:2: cannot normalise the record (UnicodeEncodeError: ")
    result = collect(records, _unchecked_pair, where="rows.jsonl", on_invalid="skip")
    assert [p.context[0]["content"] for p in result.items] == ["fine", "also fine"]
    assert [e.line for e in result.skipped] == [2]


def test_oasst_leaves_out_unencodable_text_and_parent_cycles():
    def msg(mid, parent, role, text, rank=None):
        return {"message_id": mid, "parent_id": parent, "role": role, "text": text, "rank": rank}

    rows = [msg("p", None, "prompter", "Question?"),
            msg("a1", "p", "assistant", "good", 0), msg("a2", "p", "assistant", "bad", 1),
            msg("a3", "p", "assistant", "broken \ud800", 2),
            # x and y are each other's parent: no thread reaches an initial prompt
            msg("x", "y", "prompter", "loop"), msg("y", "x", "assistant", "loop"),
            msg("r1", "x", "assistant", "one", 0), msg("r2", "x", "assistant", "two", 1)]
    pairs = oasst_pairs(rows, dimension="quality", source="oasst")
    assert [(p.chosen, p.rejected) for p in pairs] == [("good", "bad")]
