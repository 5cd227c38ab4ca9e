"""Local loaders: JSONL, JSONL.gz and Parquet in every record form, through `load_*(DataSource)`."""

from __future__ import annotations

import pytest

from selfrefine.data import (
    DataSource,
    load_bestofn,
    load_pairs,
    load_prompts,
    validate_pairs,
    write_jsonl,
)
from tests.data.helpers import hh

MULTI_TURN = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
              {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Name a fruit."}]

HH_ROWS = [
    {"chosen": hh("What is 2+2?", "4"), "rejected": hh("What is 2+2?", "5")},
    {"chosen": hh("Hi", "Hello!", "Name a fruit.", "A pear."),
     "rejected": hh("Hi", "Hello!", "Name a fruit.", "A rock.")},
]
PROMPT_ROWS = [
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
    {"prompt": MULTI_TURN, "chosen": "A pear.", "rejected": "A rock.", "dimension": "harmless",
     "source": "mine"},
    {"prompt": [{"role": "user", "content": "Say hi"}],
     "chosen": [{"role": "assistant", "content": "Hi!"}],
     "rejected": [{"role": "assistant", "content": "No."}]},
]


@pytest.fixture(params=["jsonl", "jsonl.gz", "parquet"])
def write_rows(request, write_lines, write_parquet):
    def write(stem, rows):
        if request.param == "parquet":
            return write_parquet(f"{stem}.parquet", rows)
        return write_lines(f"{stem}.{request.param}", rows)
    return write


def test_hh_transcripts_load_with_multi_turn_context(write_rows):
    path = write_rows("hh", HH_ROWS)
    pairs = load_pairs(DataSource(kind="local", path=str(path), dimension="harmless"))
    assert [(p.chosen, p.rejected) for p in pairs] == [("4", "5"), ("A pear.", "A rock.")]
    assert pairs[1].context == [{"role": "user", "content": "Hi"},
                                {"role": "assistant", "content": "Hello!"},
                                {"role": "user", "content": "Name a fruit."}]
    assert {p.dimension for p in pairs} == {"harmless"}
    assert {p.source for p in pairs} == {"hh"}  # the file's stem


@pytest.mark.parametrize("name", ["pcr.jsonl", "pcr.jsonl.gz"])
def test_prompt_chosen_rejected_form(write_lines, name):
    path = write_lines(name, PROMPT_ROWS)
    pairs = load_pairs(DataSource(kind="local", path=str(path), dimension="helpful", source="seed"))
    assert pairs[0].context == [{"role": "user", "content": "What is 2+2?"}]
    assert pairs[1].context == MULTI_TURN  # system turn and multi-turn history preserved
    assert (pairs[1].dimension, pairs[1].source) == ("harmless", "mine")  # the record's own labels
    assert (pairs[0].dimension, pairs[0].source) == ("helpful", "seed")  # the caller's defaults
    assert (pairs[2].chosen, pairs[2].rejected) == ("Hi!", "No.")


def test_prompt_chosen_rejected_form_in_parquet(write_parquet):
    rows = [{"prompt": MULTI_TURN, "chosen": "A pear.", "rejected": "A rock.", "dimension": None},
            {"prompt": MULTI_TURN[1:2], "chosen": "Hello.", "rejected": "Go away.", "dimension": "harmless"}]
    path = write_parquet("pcr.parquet", rows)  # Parquet columns are typed: nulls fill absent fields
    pairs = load_pairs(DataSource(kind="local", path=str(path), dimension="helpful"))
    assert pairs[0].context == MULTI_TURN and pairs[0].dimension == "helpful"
    assert pairs[1].dimension == "harmless"


def test_message_list_form_and_our_own_artifacts_load_as_local_files(write_lines, tmp_path):
    conversation = MULTI_TURN + [{"role": "assistant", "content": "A pear."}]
    other = MULTI_TURN + [{"role": "assistant", "content": "A rock."}]
    path = write_lines("msgs.jsonl", [{"chosen": conversation, "rejected": other}])
    pairs = validate_pairs(path, dimension="helpful")
    assert pairs[0].context == MULTI_TURN and pairs[0].chosen == "A pear."
    artifact = tmp_path / "artifact.jsonl"
    write_jsonl(artifact, pairs)
    assert validate_pairs(artifact) == pairs  # same ids, dimension and source


def test_dimension_names_are_canonicalised(write_lines):
    path = write_lines("d.jsonl", [{"prompt": "Tell a joke", "chosen": "Ha", "rejected": "No",
                                    "dimension": "Humor"}])
    assert validate_pairs(path)[0].dimension == "humour"


def test_default_source_is_the_file_name_without_data_suffixes(write_lines):
    path = write_lines("seed.v2.jsonl.gz", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    assert validate_pairs(path, dimension="helpful")[0].source == "seed.v2"


def test_limit_keeps_the_first_valid_items(write_lines):
    rows = [{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(10)]
    path = write_lines("many.jsonl", rows)
    pairs = load_pairs(DataSource(kind="local", path=str(path), dimension="helpful", limit=3))
    assert [p.context[0]["content"] for p in pairs] == ["q0", "q1", "q2"]


@pytest.mark.parametrize("record, expected", [
    ({"prompt": "Plain question?"}, [{"role": "user", "content": "Plain question?"}]),
    ({"prompt": MULTI_TURN}, MULTI_TURN),
    ({"context": MULTI_TURN}, MULTI_TURN),
    ({"instruction": "Summarise this.", "input": "Some text."},
     [{"role": "user", "content": "Summarise this.\n\nSome text."}]),
    ({"instruction": "Just do it.", "input": ""}, [{"role": "user", "content": "Just do it."}]),
    ({"chosen": hh("Hi", "Hello!", "Name a fruit.", "A pear.")},
     [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
      {"role": "user", "content": "Name a fruit."}]),
])
def test_prompt_forms(write_rows, record, expected):
    path = write_rows("prompts", [record])
    prompts = load_prompts(DataSource(kind="local", path=str(path), dimension="helpful"))
    assert [p.context for p in prompts] == [expected]


def test_bestofn_file_loads_with_candidates_and_reference(write_rows):
    rows = [{"id": 7, "instruction": "Name a colour.", "reference": "Red.", "dataset": "x",
             "candidates": [{"sample": 0, "output": "Blue.", "preference": 1.25},
                            {"sample": 1, "output": "Green and blue.", "preference": 2}]}]
    path = write_rows("bon", rows)
    (item,) = load_bestofn(DataSource(kind="local", path=str(path), dimension="helpful"))
    assert item.context == [{"role": "user", "content": "Name a colour."}]
    assert item.reference == "Red."
    assert [(c.output, c.win) for c in item.candidates] == [("Blue.", 0.25), ("Green and blue.", 1.0)]


def test_blank_lines_and_a_byte_order_mark_are_tolerated(write_lines):
    path = write_lines("bom.jsonl", [b"\xef\xbb\xbf" + b'{"prompt": "q", "chosen": "a", "rejected": "b"}',
                                     "", "   ", {"prompt": "r", "chosen": "a", "rejected": "b"}])
    assert len(validate_pairs(path, dimension="helpful")) == 2
