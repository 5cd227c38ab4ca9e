"""Schema: JSON round trips, content-hash ids, deterministic artifact bytes."""

from __future__ import annotations

import hashlib
import json

import pytest

from selfrefine.data import (
    BestOfNItem,
    Candidate,
    PreferencePair,
    PromptItem,
    turn,
    write_jsonl,
)
from selfrefine.errors import DataError

CONTEXT = [turn("system", "Be brief."), turn("user", "Hi"), turn("assistant", "Hello!"),
           turn("user", "What is 2+2?")]


def make_pair(**changes) -> PreferencePair:
    fields = dict(context=CONTEXT, chosen="4", rejected="5", dimension="helpful", source="unit")
    fields.update(changes)
    return PreferencePair(**fields)


def test_pair_round_trips_through_json_text():
    pair = make_pair()
    again = PreferencePair.from_json(json.loads(json.dumps(pair.to_json())))
    assert again == pair
    assert again.context == CONTEXT and again.id == pair.id


def test_prompt_and_bestofn_round_trip():
    prompt = PromptItem(CONTEXT, "harmless", "unit")
    assert PromptItem.from_json(json.loads(json.dumps(prompt.to_json()))) == prompt
    item = BestOfNItem(CONTEXT, [Candidate("4", 2.0), Candidate("five", 1.0)], "Four.", "helpful", "unit")
    back = BestOfNItem.from_json(json.loads(json.dumps(item.to_json())))
    assert back == item
    assert [c.win for c in back.candidates] == [1.0, 0.0]


def test_ids_depend_on_content_not_on_source():
    base = make_pair()
    assert make_pair().id == base.id  # recomputed, not random
    assert make_pair(source="elsewhere").id == base.id
    for change in ({"chosen": "four"}, {"rejected": "6"}, {"dimension": "harmless"},
                   {"context": CONTEXT[:-1] + [turn("user", "What is 3+3?")]}):
        assert make_pair(**change).id != base.id, change
    # Swapping chosen and rejected is a different (opposite) preference.
    assert make_pair(chosen="5", rejected="4").id != base.id


def test_id_ignores_extra_keys_and_later_mutation_of_the_input_list():
    context = [dict(t, extra="x") for t in CONTEXT]
    pair = make_pair(context=context)
    assert pair.id == make_pair().id
    context.append(turn("assistant", "late"))
    assert pair.context == CONTEXT


def test_id_cannot_be_set_by_the_caller():
    with pytest.raises(TypeError):
        PreferencePair(CONTEXT, "4", "5", "helpful", "unit", "my-id")  # type: ignore[call-arg]


def test_from_json_refuses_an_edited_record():
    record = make_pair().to_json()
    record["chosen"] = "four"
    with pytest.raises(DataError, match="does not match the content") as info:
        PreferencePair.from_json(record)
    assert info.value.field == "id"
    del record["id"]
    assert PreferencePair.from_json(record).chosen == "four"


@pytest.mark.parametrize("record, field", [
    ({"context": "hi", "chosen": "a", "rejected": "b", "dimension": "d", "source": "s"}, "context"),
    ({"context": [{"role": "bot", "content": "x"}], "chosen": "a", "rejected": "b", "dimension": "d",
      "source": "s"}, "context[0].role"),
    ({"context": [{"role": "user", "content": 3}], "chosen": "a", "rejected": "b", "dimension": "d",
      "source": "s"}, "context[0].content"),
    ({"context": [{"role": "user", "content": "x"}], "rejected": "b", "dimension": "d",
      "source": "s"}, "chosen"),
])
def test_from_json_names_the_bad_field(record, field):
    with pytest.raises(DataError) as info:
        PreferencePair.from_json(record)
    assert info.value.field == field


def test_write_jsonl_is_byte_identical_for_the_same_items(tmp_path):
    items = [make_pair(), make_pair(chosen="four ✓")]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert write_jsonl(a, items) == 2
    write_jsonl(b, [make_pair(), make_pair(chosen="four ✓")])
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    lines = a.read_text(encoding="utf-8").splitlines()
    assert [PreferencePair.from_json(json.loads(line)) for line in lines] == items


def test_read_jsonl_reads_artifacts_back_and_refuses_edited_lines(tmp_path):
    from selfrefine.data import read_jsonl

    path = tmp_path / "pairs.jsonl"
    items = [make_pair(), make_pair(chosen="four")]
    write_jsonl(path, items)
    assert read_jsonl(path, "pairs") == items
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace('"four"', '"edited"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="does not match the content") as info:
        read_jsonl(path, "pairs")
    assert (info.value.line, info.value.field) == (2, "id")


def test_a_graded_pair_keeps_its_gap_out_of_the_id_and_an_ungraded_line_unchanged():
    graded = make_pair(gap=0.75)
    assert graded.id == make_pair().id  # like the source: the same preference, however it was graded
    assert PreferencePair.from_json(json.loads(json.dumps(graded.to_json()))).gap == 0.75
    assert "gap" not in make_pair().to_json()  # artifacts written before gaps existed read the same


@pytest.mark.parametrize("gap, message", [(-0.5, "negative"), ("wide", "expected a number"), (True, "expected a number"),
                                          (float("nan"), "finite")])
def test_a_bad_gap_is_refused_naming_the_field(gap, message):
    record = dict(make_pair().to_json(), gap=gap)
    with pytest.raises(DataError, match=message) as info:
        PreferencePair.from_json(record)
    assert info.value.field == "gap"
