"""Hub sets: pure row converters on hand-written rows in each set's published format, the same
converters end to end through `DataSource(kind=..., path=...)`, and the offline message."""

from __future__ import annotations

import gzip
import json
import time

import pytest

from selfrefine.data import DataSource, HubUnavailableError, load_pairs, load_prompts
from selfrefine.data.hub_rows import (
    hh_rlhf_pair,
    oasst_pairs,
    shp_pair,
    ultrafeedback_pair,
    webgpt_pair,
)
from selfrefine.errors import DataError
from tests.data.helpers import hh


def oasst_message(message_id, parent_id, role, text, rank=None, lang="en", deleted=False):
    # The flat oasst1 message table (one row per message), with the columns pairs depend on and a
    # few that they must ignore.
    return {"message_id": message_id, "parent_id": parent_id, "user_id": "u-" + message_id,
            "created_date": "2023-02-05T14:23:50.983374+00:00", "text": text, "role": role,
            "lang": lang, "review_count": 3, "review_result": True, "deleted": deleted, "rank": rank,
            "synthetic": False, "model_name": None, "detoxify": None, "message_tree_id": "t1",
            "tree_state": "ready_for_export", "emojis": None, "labels": None}


OASST_ROWS = [
    oasst_message("p1", None, "prompter", "How do I keep bread fresh?"),
    oasst_message("a1", "p1", "assistant", "Keep it in a bread box at room temperature.", rank=0),
    oasst_message("a2", "p1", "assistant", "Put it in the fridge.", rank=1),
    oasst_message("a3", "p1", "assistant", "Bread does not go stale.", rank=2),
    oasst_message("a4", "p1", "assistant", "Unranked reply.", rank=None),
    oasst_message("a5", "p1", "assistant", "Deleted reply.", rank=3, deleted=True),
    oasst_message("p2", "a1", "prompter", "Und wie lange hält es?", lang="de"),
    oasst_message("b1", "p2", "assistant", "Etwa drei Tage.", rank=0, lang="de"),
    oasst_message("b2", "p2", "assistant", "Für immer.", rank=1, lang="de"),
    # A thread whose initial prompt was deleted: its replies have no usable context.
    oasst_message("q1", None, "prompter", "gone", deleted=True),
    oasst_message("c1", "q1", "assistant", "one", rank=0),
    oasst_message("c2", "q1", "assistant", "two", rank=1),
]

WEBGPT_ROW = {
    "question": {"dataset": "eli5", "id": "q-1", "full_text": "Why do cats purr?"},
    "quotes_0": {"title": ["Cats (wikipedia.org)"], "extract": ["Purring is a sound..."]},
    "answer_0": "Cats purr when content and also to soothe themselves [1].",
    "tokens_0": {"prefix": [1, 2], "completion": [3]},
    "score_0": -0.5,
    "quotes_1": {"title": [], "extract": []},
    "answer_1": "Cats purr by vibrating muscles in the larynx, often when relaxed or stressed [1].",
    "tokens_1": {"prefix": [1, 2], "completion": [4]},
    "score_1": 0.5,
}

SHP_ROW = {
    "post_id": "himc90", "domain": "askculinary_train", "upvote_ratio": 0.98,
    "history": "Why does my rice turn mushy?", "c_root_id_A": "fugb7ff", "c_root_id_B": "fuh1l2n",
    "created_at_utc_A": 1593535113, "created_at_utc_B": 1593539999, "score_A": 3, "score_B": 25,
    "human_ref_A": "Too much water and stirring it.", "human_ref_B": "Buy a new pot.",
    "labels": 1, "seconds_difference": 4886.0, "score_ratio": 8.3,
}

ULTRAFEEDBACK_ROW = {
    "prompt": "Name a prime number above 10.", "prompt_id": "abc123",
    "chosen": [{"content": "Name a prime number above 10.", "role": "user"},
               {"content": "11 is a prime number above 10.", "role": "assistant"}],
    "rejected": [{"content": "Name a prime number above 10.", "role": "user"},
                 {"content": "12.", "role": "assistant"}],
    "messages": [{"content": "Name a prime number above 10.", "role": "user"},
                 {"content": "11 is a prime number above 10.", "role": "assistant"}],
    "score_chosen": 9.0, "score_rejected": 3.0,
}


def test_hh_rlhf_row():
    pair = hh_rlhf_pair({"chosen": hh("Hi", "Hello", "Help?", "Sure."),
                         "rejected": hh("Hi", "Hello", "Help?", "No.")},
                        dimension="harmless", source="hh-rlhf/harmless-base")
    assert len(pair.context) == 3 and (pair.chosen, pair.rejected) == ("Sure.", "No.")


def test_oasst_pairs_siblings_by_rank_with_thread_context():
    pairs = oasst_pairs(OASST_ROWS, dimension="quality", source="oasst")
    by_context = {}
    for p in pairs:
        by_context.setdefault(len(p.context), []).append((p.chosen, p.rejected))
    texts = {r["message_id"]: r["text"] for r in OASST_ROWS}
    assert sorted(by_context[1]) == sorted([(texts["a1"], texts["a2"]), (texts["a1"], texts["a3"]),
                                            (texts["a2"], texts["a3"])])
    assert by_context[3] == [(texts["b1"], texts["b2"])]
    deep = next(p for p in pairs if len(p.context) == 3)
    assert [t["role"] for t in deep.context] == ["user", "assistant", "user"]
    assert deep.context[1]["content"] == texts["a1"]  # the thread follows the parent chain
    assert len(pairs) == 4  # unranked, deleted and orphaned replies give no pair


def test_oasst_language_filter():
    pairs = oasst_pairs(OASST_ROWS, dimension="quality", source="oasst", language="de")
    assert [(p.chosen, p.rejected) for p in pairs] == [("Etwa drei Tage.", "Für immer.")]


def test_webgpt_higher_score_is_chosen_and_ties_are_refused():
    pair = webgpt_pair(WEBGPT_ROW, dimension="helpful", source="webgpt")
    assert pair.context == [{"role": "user", "content": "Why do cats purr?"}]
    assert pair.chosen == WEBGPT_ROW["answer_1"] and pair.rejected == WEBGPT_ROW["answer_0"]
    flipped = webgpt_pair(dict(WEBGPT_ROW, score_0=0.5, score_1=-0.5), dimension="helpful",
                          source="webgpt")
    assert flipped.chosen == WEBGPT_ROW["answer_0"]
    with pytest.raises(DataError, match="tie") as info:
        webgpt_pair(dict(WEBGPT_ROW, score_0=0.0, score_1=0.0), dimension="helpful", source="webgpt")
    assert info.value.field == "score_0"


def test_shp_labels_pick_the_preferred_comment():
    pair = shp_pair(SHP_ROW, dimension="helpful", source="shp")
    assert pair.context == [{"role": "user", "content": SHP_ROW["history"]}]
    assert (pair.chosen, pair.rejected) == (SHP_ROW["human_ref_A"], SHP_ROW["human_ref_B"])
    other = shp_pair(dict(SHP_ROW, labels=0), dimension="helpful", source="shp")
    assert (other.chosen, other.rejected) == (SHP_ROW["human_ref_B"], SHP_ROW["human_ref_A"])
    with pytest.raises(DataError) as info:
        shp_pair(dict(SHP_ROW, labels=2), dimension="helpful", source="shp")
    assert info.value.field == "labels"


def test_ultrafeedback_message_lists():
    pair = ultrafeedback_pair(ULTRAFEEDBACK_ROW, dimension="quality", source="ultrafeedback")
    assert pair.context == [{"role": "user", "content": "Name a prime number above 10."}]
    assert (pair.chosen, pair.rejected) == ("11 is a prime number above 10.", "12.")
    with pytest.raises(DataError, match="tie"):
        ultrafeedback_pair(dict(ULTRAFEEDBACK_ROW, score_rejected=9.0), dimension="quality",
                           source="ultrafeedback")


@pytest.mark.parametrize("kind, rows, count, dimension", [
    ("oasst", OASST_ROWS, 4, "quality"),
    ("webgpt", [WEBGPT_ROW, dict(WEBGPT_ROW, score_0=0.0, score_1=0.0)], 1, "helpful"),
    ("shp", [SHP_ROW, dict(SHP_ROW, labels=0)], 2, "helpful"),
    ("ultrafeedback", [ULTRAFEEDBACK_ROW], 1, "quality"),
])
def test_hub_kinds_read_a_local_file_of_their_rows(write_lines, kind, rows, count, dimension):
    path = write_lines(f"{kind}.jsonl", rows)
    pairs = load_pairs(DataSource(kind=kind, path=str(path)))
    assert len(pairs) == count  # the webgpt tie is skipped: hub sets skip invalid rows by default
    assert {p.dimension for p in pairs} == {dimension} and {p.source for p in pairs} == {kind}


def test_hub_rows_in_strict_mode_name_the_row(write_lines):
    path = write_lines("webgpt.jsonl", [WEBGPT_ROW, dict(WEBGPT_ROW, score_0=0.0, score_1=0.0)])
    with pytest.raises(DataError, match="tie") as info:
        load_pairs(DataSource(kind="webgpt", path=str(path), on_invalid="error"))
    assert (info.value.path, info.value.line, info.value.field) == (str(path), 2, "score_0")


def test_hh_rlhf_from_a_downloaded_copy_through_datasets(tmp_path):
    # A directory laid out like the hub repository, read by `datasets.load_dataset` offline.
    folder = tmp_path / "hh-rlhf" / "harmless-base"
    folder.mkdir(parents=True)
    rows = [{"chosen": hh(f"Question {i}?", "A kind answer."), "rejected": hh(f"Question {i}?", "Rude.")}
            for i in range(5)] + [{"chosen": hh("Empty?", ""), "rejected": hh("Empty?", "x")}]
    with gzip.open(folder / "test.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    source = DataSource(kind="hh-rlhf", subset="harmless-base", split="test",
                        path=str(tmp_path / "hh-rlhf"))
    pairs = load_pairs(source)
    assert len(pairs) == 5 and {p.dimension for p in pairs} == {"harmless"}
    assert {p.source for p in pairs} == {"hh-rlhf/harmless-base"}
    prompts = load_prompts(source.model_copy(update={"limit": 2}))
    assert [p.context[0]["content"] for p in prompts] == ["Question 0?", "Question 1?"]


@pytest.fixture
def hub_offline(monkeypatch, tmp_path):
    """Offline with an empty cache, even if `datasets` was imported before HF_HUB_OFFLINE was set."""
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


@pytest.mark.parametrize("kind, subset", [("hh-rlhf", "harmless-base"), ("ultrafeedback", None),
                                          ("oasst", None)])
def test_unreachable_hub_says_how_to_use_a_local_file(hub_offline, kind, subset):
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError) as info:
        load_pairs(DataSource(kind=kind, subset=subset))
    message = str(info.value)
    assert "HF_HUB_OFFLINE is set" in message
    assert "kind='local'" in message and "path=" in message and "hf download" in message
    assert time.perf_counter() - start < 30  # no network retries


def test_datasource_rejects_bad_combinations():
    from pydantic import ValidationError

    for kwargs, fragment in (({"kind": "local"}, "needs path"),
                             ({"kind": "hh-rlhf"}, "needs subset"),
                             ({"kind": "hh-rlhf", "subset": "red-team"}, "needs subset"),
                             ({"kind": "webgpt", "subset": "x"}, "applies to kind"),
                             ({"kind": "shp", "language": "en"}, "kind='oasst' only"),
                             ({"kind": "demo", "path": "x.jsonl"}, "demo"),
                             ({"kind": "local", "path": "x.jsonl", "split": "test"}, "hub kinds"),
                             ({"kind": "local", "path": "x.jsonl", "limit": 0}, "greater than"),
                             ({"kind": "local", "path": "x.jsonl", "colour": 1}, "Extra inputs")):
        with pytest.raises(ValidationError, match=fragment):
            DataSource(**kwargs)
