"""hh-rlhf transcripts: turns, multi-turn contexts, and the pairs they cannot make."""

from __future__ import annotations

import pytest

from selfrefine.data.hh import hh_context, hh_pair, parse_transcript
from selfrefine.errors import DataError
from tests.data.helpers import hh


def test_multi_turn_transcript_keeps_every_turn_in_order():
    text = hh("Hi there", "Hello! How can I help?", "Name a fruit.", "An apple.")
    assert parse_transcript(text) == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Name a fruit."},
        {"role": "assistant", "content": "An apple."},
    ]


def test_pair_splits_shared_context_from_the_two_final_responses():
    context, chosen, rejected = hh_pair(hh("Hi", "Hello!", "Name a fruit.", "A pear."),
                                        hh("Hi", "Hello!", "Name a fruit.", "A rock."))
    assert [t["content"] for t in context] == ["Hi", "Hello!", "Name a fruit."]
    assert (chosen, rejected) == ("A pear.", "A rock.")


def test_turn_text_keeps_inner_newlines_and_glued_markers():
    # Only a marker after a blank line starts a turn; hh-rlhf has a few glued "  Human:" inside turns.
    turns = parse_transcript(hh("Line one\nline two", "Sure.  Human: not a new turn"))
    assert turns[0]["content"] == "Line one\nline two"
    assert len(turns) == 2 and turns[1]["content"].endswith("not a new turn")


def test_transcript_without_leading_blank_line_is_accepted():
    assert parse_transcript("Human: Hi\n\nAssistant: Hello")[0] == {"role": "user", "content": "Hi"}


@pytest.mark.parametrize("text, message", [
    (hh("Only a question"), "no Assistant turn"),
    ("just some text", "not an hh transcript"),
    ("preface\n\nHuman: Hi\n\nAssistant: Hello", "text before the first"),
])
def test_unusable_transcripts_name_the_problem(text, message):
    with pytest.raises(DataError, match=message) as info:
        parse_transcript(text, field="rejected")
    assert info.value.field == "rejected"


def test_pair_whose_contexts_differ_is_refused():
    with pytest.raises(DataError, match="differ at turn 3") as info:
        hh_pair(hh("Hi", "Hello!", "Name a fruit.", "A pear."),
                hh("Hi", "Hello!", "Name a car.", "A van."))
    assert info.value.field == "rejected"


def test_pair_must_end_with_an_assistant_turn():
    with pytest.raises(DataError, match="must end with an assistant turn") as info:
        hh_pair(hh("Hi", "Hello!", "Bye"), hh("Hi", "Hi!"))
    assert info.value.field == "chosen"


def test_context_for_generation_is_everything_before_the_last_assistant_turn():
    assert [t["content"] for t in hh_context(hh("Hi", "Hello!", "Name a fruit.", "A pear."))] == \
        ["Hi", "Hello!", "Name a fruit."]
