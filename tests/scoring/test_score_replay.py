"""RecordingJudge: every score is recorded under the judge's identity, and a later evaluation with
the same identity takes recorded scores over instead of scoring those items again."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from selfrefine.models.judge import Judge
from selfrefine.models.judge_types import AbsoluteItem, PairItem
from selfrefine.scoring.score_replay import RecordingJudge, item_digest, judge_identity

CTX = [{"role": "user", "content": "How should I store fresh basil?"}]
RESPONSES = ["Keep the stems in a glass of water.", "Put it in the freezer.", "Basil is a herb.",
             "Wrap it in a damp paper towel."]


@pytest.fixture(scope="module")
def judge(model_cache):
    from selfrefine.models.loading import resolve_model

    with pytest.MonkeyPatch.context() as env:
        env.setenv("SELFREFINE_MODEL_CACHE", str(model_cache))
        env.setenv("HF_HUB_OFFLINE", "1")
        return Judge.from_pretrained(resolve_model("tiny"), dtype="float32", device="cpu")


def _absolute(responses=RESPONSES, dimension="helpful"):
    return [AbsoluteItem(CTX, r, dimension) for r in responses]


def test_a_recording_scores_like_the_judge_and_records_every_item(judge):
    recorder = RecordingJudge(judge, "id-1")
    scores = recorder.score_absolute(_absolute())
    pairs = [PairItem(CTX, RESPONSES[0], RESPONSES[1]), PairItem(CTX, RESPONSES[2], RESPONSES[3])]
    verdicts = recorder.compare(pairs)
    assert scores == judge.score_absolute(_absolute())
    assert verdicts == judge.compare(pairs)
    assert recorder.record["identity"] == "id-1"
    assert recorder.record["score_absolute"] == {item_digest(i): dataclasses.asdict(s)
                                                 for i, s in zip(_absolute(), scores)}
    assert set(recorder.record["compare"]) == {item_digest(p) for p in pairs}
    assert (recorder.replayed, recorder.scored) == (0, 6)
    # Everything else is the judge's own.
    assert recorder.kind == judge.kind and recorder.compare_cot == judge.compare_cot


def test_recorded_scores_of_the_same_identity_are_taken_over_and_only_new_items_scored(judge):
    first = RecordingJudge(judge, "id-1")
    first.score_absolute(_absolute(RESPONSES[:2]))
    previous = copy.deepcopy(first.record)
    # Mark the recorded scores, so a taken-over score can be told from a fresh one.
    for entry in previous["score_absolute"].values():
        entry["score"] = 42.0

    again = RecordingJudge(judge, "id-1", previous)
    items = _absolute([RESPONSES[2], RESPONSES[0], RESPONSES[3], RESPONSES[1]])
    scores = again.score_absolute(items)
    assert [s.score for s in scores[1::2]] == [42.0, 42.0]
    fresh = judge.score_absolute([items[0], items[2]])
    assert [scores[0], scores[2]] == fresh
    assert (again.replayed, again.scored) == (2, 2)
    # The new record holds every item this evaluation judged, taken over or not, and nothing else.
    assert set(again.record["score_absolute"]) == {item_digest(i) for i in items}

    # Another dimension is another item; another identity takes nothing over.
    other_dimension = again.score_absolute(_absolute(RESPONSES[:1], dimension="harmless"))
    assert other_dimension[0].score != 42.0
    changed = RecordingJudge(judge, "id-2", previous)
    assert all(s.score != 42.0 for s in changed.score_absolute(_absolute(RESPONSES[:2])))
    assert changed.replayed == 0


def test_a_judge_identity_follows_its_files_and_settings(tmp_path):
    judge_dir = tmp_path / "judge"
    judge_dir.mkdir()
    (judge_dir / "weights.bin").write_bytes(b"\x00" * 8)
    settings = {"load": {"dtype": "bfloat16", "max_length": 512}}
    same = judge_identity(judge_dir, settings)
    assert judge_identity(judge_dir, dict(settings)) == same
    assert judge_identity(judge_dir, {"load": {"dtype": "bfloat16", "max_length": 768}}) != same
    (judge_dir / "weights.bin").write_bytes(b"\x01" * 8)
    assert judge_identity(judge_dir, settings) != same
    # A hub id's content is not pinned: it has no identity, so its scores are never taken over.
    assert judge_identity("someone/some-judge", settings) is None
