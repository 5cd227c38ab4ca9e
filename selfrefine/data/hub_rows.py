"""Pure converters from rows of public preference sets (in their published formats) to pairs.

Each function takes plain dicts as `datasets` yields them and raises `RecordError` naming the
field for a row it cannot use; nothing here touches the network.

- Anthropic/hh-rlhf: `{"chosen": transcript, "rejected": transcript}`.
- OpenAssistant/oasst1: one row per message (`message_id`, `parent_id`, `role` prompter|assistant,
  `text`, `rank` among siblings, 0 = best; `lang`, `deleted`); pairs are sibling replies by rank.
- openai/webgpt_comparisons: `question.full_text`, `answer_0/1`, `score_0/1` (the higher is better;
  ties carry no preference).
- stanfordnlp/SHP: `history` (the post), `human_ref_A/B`, `labels` (1 = A preferred, 0 = B).
- HuggingFaceH4/ultrafeedback_binarized: `chosen` / `rejected` message lists sharing the prompt,
  `score_chosen` / `score_rejected`.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any, Iterable, Mapping

from selfrefine.data.fields import (
    RecordError,
    finite_number,
    get_str,
    parse_turns,
    require_mapping,
)
from selfrefine.data.hh import hh_pair, split_final_responses
from selfrefine.data.schema import PreferencePair, Turn, turn


def _number(row: Mapping[str, Any], name: str) -> float:
    return finite_number(row.get(name), name)


def hh_rlhf_pair(raw: Any, *, dimension: str, source: str) -> PreferencePair:
    """An Anthropic hh-rlhf row (two transcripts that differ in the last Assistant turn)."""
    row = require_mapping(raw)
    context, chosen, rejected = hh_pair(get_str(row, "chosen"), get_str(row, "rejected"))
    return PreferencePair(context, chosen, rejected, dimension, source)


def webgpt_pair(raw: Any, *, dimension: str, source: str) -> PreferencePair:
    """A WebGPT comparison: the answer with the higher score is chosen; a tie is refused."""
    row = require_mapping(raw)
    question = row.get("question")
    if not isinstance(question, Mapping):
        raise RecordError("expected an object with 'full_text'", field="question")
    text = get_str(question, "full_text", where="question.full_text")
    s0, s1 = _number(row, "score_0"), _number(row, "score_1")
    if s0 == s1:
        raise RecordError(f"tie (score_0 = score_1 = {s0}): no preference to learn", field="score_0")
    better, worse = ("answer_0", "answer_1") if s0 > s1 else ("answer_1", "answer_0")
    return PreferencePair([turn("user", text)], get_str(row, better), get_str(row, worse),
                          dimension, source)


def shp_pair(raw: Any, *, dimension: str, source: str) -> PreferencePair:
    """An SHP row: the post is the prompt, `labels` says which of the two comments was preferred."""
    row = require_mapping(raw)
    label = row.get("labels")
    if label not in (0, 1) or isinstance(label, bool):
        raise RecordError(f"expected 1 (A preferred) or 0 (B preferred), got {label!r}", field="labels")
    a, b = get_str(row, "human_ref_A"), get_str(row, "human_ref_B")
    chosen, rejected = (a, b) if label == 1 else (b, a)
    return PreferencePair([turn("user", get_str(row, "history"))], chosen, rejected, dimension, source)


def ultrafeedback_pair(raw: Any, *, dimension: str, source: str) -> PreferencePair:
    """An UltraFeedback-binarized row: two message lists ending in different assistant replies."""
    row = require_mapping(raw)
    if "score_chosen" in row and "score_rejected" in row:
        if _number(row, "score_chosen") == _number(row, "score_rejected"):
            raise RecordError("tie (score_chosen = score_rejected): no preference to learn",
                              field="score_rejected")
    context, chosen, rejected = split_final_responses(parse_turns(row.get("chosen"), "chosen"),
                                                      parse_turns(row.get("rejected"), "rejected"))
    return PreferencePair(context, chosen, rejected, dimension, source)


_OASST_ROLE = {"prompter": "user", "assistant": "assistant"}


def _usable_text(msg: Mapping[str, Any]) -> bool:
    text = msg.get("text")
    if not isinstance(text, str):
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape: no file or hash can hold it
        return False
    return True


def oasst_pairs(rows: Iterable[Mapping[str, Any]], *, dimension: str, source: str,
                language: str | None = None) -> list[PreferencePair]:
    """OpenAssistant message rows → pairs of ranked sibling replies (lower rank is better).

    Every two siblings with different ranks give one pair; the context is the thread from the
    initial prompt down to their parent. Deleted messages, messages whose text is not a string
    that UTF-8 can encode, threads with a missing or deleted ancestor or a parent cycle, and (when
    `language` is set) replies in other languages are left out.
    """
    messages: dict[str, Mapping[str, Any]] = {}
    children: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("deleted") or row.get("role") not in _OASST_ROLE or not row.get("message_id"):
            continue
        messages[row["message_id"]] = row
        if row.get("parent_id"):
            children[row["parent_id"]].append(row)

    def thread(message_id: str) -> list[Turn] | None:
        turns: list[Turn] = []
        current: str | None = message_id
        seen: set[str] = set()
        while current is not None:
            msg = messages.get(current)
            if msg is None or current in seen or not _usable_text(msg):
                return None
            seen.add(current)
            turns.append(turn(_OASST_ROLE[msg["role"]], msg["text"]))  # type: ignore[arg-type]
            current = msg.get("parent_id")
        return turns[::-1]

    pairs = []
    for parent_id, replies in children.items():
        ranked = [r for r in replies if r["role"] == "assistant" and isinstance(r.get("rank"), int)
                  and _usable_text(r) and (language is None or r.get("lang") == language)]
        if len(ranked) < 2:
            continue
        context = thread(parent_id)
        if context is None or context[-1]["role"] != "user":
            continue
        ranked.sort(key=lambda r: r["rank"])
        for better, worse in itertools.combinations(ranked, 2):
            if better["rank"] < worse["rank"]:
                pairs.append(PreferencePair(context, better["text"], worse["text"], dimension, source))
    return pairs
