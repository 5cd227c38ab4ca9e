"""Data sources → one normalised schema, validated before any stage starts.

- `schema`: `PreferencePair`, `PromptItem`, `BestOfNItem` (content-hash ids, `to_json`/`from_json`).
- `sources`: `DataSource` config and `load_pairs` / `load_prompts` / `load_bestofn`.
- `validate`: `validate_pairs` / `validate_prompts` / `validate_bestofn` for local files.
- `hub_rows`: pure converters for hh-rlhf, OpenAssistant, WebGPT, SHP, UltraFeedback rows.
- `paths.confine`: keep configured paths inside a root.

Importing this package loads neither `datasets` nor any model code.
"""

from selfrefine.data.bestofn import oracle_win_rate, random_pick_win_rate, win_rate
from selfrefine.data.hub import HUB_DATASETS, HubUnavailableError
from selfrefine.data.paths import confine
from selfrefine.data.schema import (
    BestOfNItem,
    Candidate,
    PreferencePair,
    PromptItem,
    Turn,
    content_id,
    turn,
    write_jsonl,
)
from selfrefine.data.sources import DataSource, demo_path, load_bestofn, load_pairs, load_prompts
from selfrefine.data.validate import (
    DataValidationError,
    LoadResult,
    read_jsonl,
    read_local,
    validate_bestofn,
    validate_items,
    validate_pairs,
    validate_prompts,
)

__all__ = [
    "BestOfNItem", "Candidate", "DataSource", "DataValidationError", "HUB_DATASETS",
    "HubUnavailableError", "LoadResult", "PreferencePair", "PromptItem", "Turn", "confine",
    "content_id", "demo_path", "load_bestofn", "load_pairs", "load_prompts", "oracle_win_rate",
    "random_pick_win_rate", "read_jsonl", "read_local", "turn", "validate_bestofn", "validate_items",
    "validate_pairs", "validate_prompts", "win_rate", "write_jsonl",
]
