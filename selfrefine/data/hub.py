"""Public preference sets on the Hugging Face hub: where each lives, its default split and
dimension, and loading its rows (from the hub, a downloaded copy, or a local file in the set's own
format) with a message that says what to do when the hub cannot be reached."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from selfrefine.data import hub_rows
from selfrefine.data.paths import data_path
from selfrefine.data.readers import DEFAULT_MAX_LINE_BYTES, iter_records
from selfrefine.errors import DataError

HH_SUBSETS = {"helpful-base": "helpful", "helpful-online": "helpful",
              "helpful-rejection-sampled": "helpful", "harmless-base": "harmless"}


@dataclass(frozen=True)
class HubDataset:
    """How one public set is found on the hub and turned into pairs."""

    repo: str
    default_split: str
    dimension: str
    convert: Callable[..., Any] | None  # row converter; None for sets grouped across rows (oasst)
    subsets: dict[str, str] = field(default_factory=dict)  # data_dir -> dimension (empty: any/none)
    revision: str | None = None
    subset_help: str = ""


HUB_DATASETS: dict[str, HubDataset] = {
    "hh-rlhf": HubDataset("Anthropic/hh-rlhf", "train", "helpful", hub_rows.hh_rlhf_pair,
                          subsets=HH_SUBSETS, subset_help="one of " + ", ".join(HH_SUBSETS)),
    "oasst": HubDataset("OpenAssistant/oasst1", "train", "quality", None),
    # The repository still ships a loading script, which datasets >= 4 no longer runs; the hub's
    # Parquet conversion branch holds the same rows.
    "webgpt": HubDataset("openai/webgpt_comparisons", "train", "helpful", hub_rows.webgpt_pair,
                         revision="refs/convert/parquet"),
    "shp": HubDataset("stanfordnlp/SHP", "train", "helpful", hub_rows.shp_pair,
                      subset_help="a subreddit folder such as askscience, or none for all"),
    "ultrafeedback": HubDataset("HuggingFaceH4/ultrafeedback_binarized", "train_prefs", "quality",
                                hub_rows.ultrafeedback_pair),
}


class HubUnavailableError(DataError):
    """A hub data set could not be loaded (offline, unknown name or split); says how to go local."""


def _offline_help(repo: str, kind: str) -> str:
    return (f"Without the hub: download it where the hub is reachable (`hf download {repo} "
            f"--repo-type dataset --local-dir DIR`) and set path=DIR; or give path= a JSONL/Parquet "
            f"file of its rows (DataSource(kind='{kind}', path='rows.jsonl')); or convert it to "
            f"pairs and use DataSource(kind='local', path='pairs.jsonl'). Sets already in the "
            f"local datasets cache load with HF_HUB_OFFLINE=1.")


def iter_hub_rows(kind: str, *, path: str | None = None, subset: str | None = None,
                  split: str | None = None, revision: str | None = None,
                  root: str | None = None, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                  ) -> tuple[str, Iterator[tuple[int, Any]]]:
    """`(where, rows)` for a hub set: `rows` yields `(1-based row number, row dict)`.

    `path` replaces the hub: a file of rows in the set's own format is read line by line; a
    directory is handed to `datasets.load_dataset` like the hub name.
    """
    spec = HUB_DATASETS[kind]
    split = split or spec.default_split
    if path is not None:
        local = data_path(path, root)
        if local.is_file():
            return str(path), iter_records(local, max_line_bytes=max_line_bytes)
        if not local.is_dir():
            raise DataError(f"no file or directory at path for kind='{kind}'; give a file of "
                            f"{spec.repo} rows or a downloaded copy of the repository", path=str(path))
    name = str(local) if path is not None else spec.repo
    where = f"{name}{'/' + subset if subset else ''}[{split}]"
    dataset = _load_dataset(name, kind, subset=subset, split=split,
                            revision=None if path is not None else (revision or spec.revision))
    return where, enumerate(dataset, 1)


def _load_dataset(name: str, kind: str, *, subset: str | None, split: str,
                  revision: str | None) -> Any:
    import datasets  # heavy; only when a hub source is actually used

    kwargs: dict[str, Any] = {"split": split}
    if subset:
        kwargs["data_dir"] = subset
    if revision:
        kwargs["revision"] = revision
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    state = " (HF_HUB_OFFLINE is set)" if offline else ""
    try:
        return datasets.load_dataset(name, **kwargs)
    except ConnectionError as exc:
        raise HubUnavailableError(f"cannot reach the Hugging Face hub{state}: {exc}. "
                                  + _offline_help(HUB_DATASETS[kind].repo, kind), path=name) from exc
    except (OSError, ValueError, RuntimeError, datasets.exceptions.DatasetsError) as exc:
        raise HubUnavailableError(f"cannot load the data set (split {split!r}"
                                  f"{', data_dir ' + repr(subset) if subset else ''}){state}: {exc}. "
                                  + _offline_help(HUB_DATASETS[kind].repo, kind), path=name) from exc
