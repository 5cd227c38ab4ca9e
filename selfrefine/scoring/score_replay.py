"""Per-judge score records, so an unchanged (sub-)judge's scores are taken over, not computed again.

`evaluate` takes over a previous iteration's figures whole when nothing changed. A per-dimension
judge changes piece by piece: `train_judge.keep_best` may keep last iteration's harmless sub-judge
(a byte-identical copy) and replace the helpful one. Scoring the kept sub-judge again gives the same
figures only up to rounding: bfloat16 matmuls on a CPU differ with the process's thread state, so a
judge that did not change could move a held-out pair across the line (seen: 0.646 → 0.641 with the
harmless sub-judge unchanged). So every scored item's result is recorded under the judge that
scored it, identified by its directory's content digest and the loading settings; the next
evaluation replays the records of a judge whose identity is unchanged and scores only the rest.

The records go into metrics.json under `item_scores`:

    {"harmless": {"identity": <sha256>, "score_absolute": {<item sha256>: {...AbsoluteScore}},
                  "compare": {<item sha256>: {...PairVerdict}}},
     "helpful": {...}}

A single judge's records are under `"judge"`. Sampled verdicts (chain of thought) are not recorded:
they depend on the sampler's state, not on the item alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from selfrefine.models.judge_types import AbsoluteItem, AbsoluteScore, PairItem, PairVerdict, coerce_item

log = logging.getLogger(__name__)
SINGLE = "judge"  # the records' name for a judge that is not per-dimension
RESULT_TYPES = {"score_absolute": (AbsoluteItem, AbsoluteScore), "compare": (PairItem, PairVerdict)}


def item_digest(item: Any) -> str:
    return hashlib.sha256(json.dumps(dataclasses.asdict(item), sort_keys=True).encode()).hexdigest()


def judge_identity(model: str | Path, settings: Mapping[str, Any]) -> str | None:
    """What a judge's scores depend on: its files' content (or the packaged model's version) and the
    settings it is loaded and prompted with; None for a hub id, whose content is not pinned."""
    from selfrefine.runtime.keys import model_fingerprint

    fingerprint = model_fingerprint(str(model))
    if fingerprint is None:
        return None
    payload = {"judge": fingerprint, "settings": settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class RecordingJudge:
    """A judge whose `score_absolute` and `compare` results are recorded per item, and replayed from
    `previous` (an earlier record of the same identity) instead of being scored again."""

    def __init__(self, judge: Any, identity: str, previous: Mapping[str, Any] | None = None):
        self.judge, self.identity = judge, identity
        self.replayable = previous if previous and previous.get("identity") == identity else {}
        self.record: dict[str, Any] = {"identity": identity, **{m: {} for m in RESULT_TYPES}}
        self.replayed = self.scored = 0

    def __getattr__(self, name: str) -> Any:  # kind, compare_cot, demonstrations, … are the judge's own
        if name == "judge":  # not set yet (copy, pickle): no judge to ask
            raise AttributeError(name)
        return getattr(self.judge, name)

    def score_absolute(self, items: Sequence[AbsoluteItem | Mapping]) -> list[AbsoluteScore]:
        return self._recorded("score_absolute", items)

    def compare(self, items: Sequence[PairItem | Mapping]) -> list[PairVerdict]:
        return self._recorded("compare", items)

    def _recorded(self, method: str, items: Sequence[Any]) -> list:
        item_type, result_type = RESULT_TYPES[method]
        items = [coerce_item(i, item_type) for i in items]
        keys = [item_digest(i) for i in items]
        known = self.replayable.get(method, {})
        misses = [i for i, key in enumerate(keys) if key not in known]
        # The misses are scored in one batched call, as the judge would have scored them unrecorded.
        fresh = dict(zip(misses, getattr(self.judge, method)([items[i] for i in misses]) if misses else []))
        results = [fresh[i] if i in fresh else result_type(**known[key]) for i, key in enumerate(keys)]
        self.record[method].update((key, dataclasses.asdict(r)) for key, r in zip(keys, results))
        self.replayed += len(items) - len(misses)
        self.scored += len(misses)
        return results


def record_scores(judge: Any, model: str | Path, settings: Mapping[str, Any],
                  previous: Mapping[str, Any] | None) -> tuple[Any, dict[str, RecordingJudge]]:
    """`judge` with a RecordingJudge around it (around each sub-judge of a per-dimension judge,
    in place) that replays the matching records of `previous` (a metrics.json's `item_scores`),
    and the recorders by name for `records`. A judge without an identity is not recorded."""
    from selfrefine.models.judge_info import read_judge_info, sub_judge_dirs
    from selfrefine.models.per_dimension_judge import PerDimensionJudge

    previous = previous or {}
    if isinstance(judge, PerDimensionJudge):
        dirs = sub_judge_dirs(model, read_judge_info(model))
        recorders = {dim: RecordingJudge(sub, identity, previous.get(dim)) for dim, sub in judge.judges.items()
                     if (identity := judge_identity(dirs[dim], settings)) is not None}
        judge.judges |= recorders
        return judge, recorders
    identity = judge_identity(model, settings)
    if identity is None:
        return judge, {}
    recorder = RecordingJudge(judge, identity, previous.get(SINGLE))
    return recorder, {SINGLE: recorder}


def records(recorders: Mapping[str, RecordingJudge]) -> dict[str, Any]:
    """The recorders' records for metrics.json, logging how much was taken over."""
    for name, recorder in sorted(recorders.items()):
        if recorder.replayed:
            log.info("evaluate: %s judge unchanged since the previous evaluation; %d of its scores taken over, "
                     "%d scored", name, recorder.replayed, recorder.scored)
    return {name: recorder.record for name, recorder in recorders.items()}
