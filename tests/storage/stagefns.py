"""Small stage functions and a subprocess entry point for the store tests."""

from __future__ import annotations

import os
import signal
import sys
import uuid

from pydantic import BaseModel, Field

from selfrefine.runtime.runner import run_stage
from selfrefine.runtime.stage import Output, Stage, StageReturn
from selfrefine.storage import repository as repo
from selfrefine.storage.engine import Store


class CountConfig(BaseModel):
    text: str = Field("hello", description="what to write")
    repeat: int = Field(2, description="how often")
    batch_size: int = Field(8, description="speed only", json_schema_extra={"affects_output": False})


CALLS: list[str] = []


def write_text(ctx) -> StageReturn:
    CALLS.append(ctx.stage)
    out = ctx.out_dir / "data.txt"
    out.write_text(ctx.config.text * ctx.config.repeat)
    return StageReturn({"data": Output(out, "dataset")}, [("chars", len(out.read_text()), {"part": "all"})])


def upper_dir(ctx) -> StageReturn:
    CALLS.append(ctx.stage)
    model = ctx.out_dir / "model"
    model.mkdir()
    (model / "weights.txt").write_text(ctx.inputs["data"].path.read_text().upper())
    (model / "config.json").write_text('{"n": 1}')
    return StageReturn({"model": Output(model, "model")})


def fail(ctx) -> StageReturn:
    raise ValueError("boom in stage")


def _kill_mid_write(ctx) -> StageReturn:
    """Writes half a large output, then dies as if the machine lost power."""
    out = ctx.out_dir / "big.bin"
    with open(out, "wb") as f:
        f.write(b"x" * (1 << 20))
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return StageReturn({"big": Output(out, "dataset")})


def main() -> None:
    """`python -m tests.storage.stagefns MODE DB_URL PARENT_ID [N TAG]` for the subprocess tests."""
    mode, url, parent_id = sys.argv[1], sys.argv[2], uuid.UUID(sys.argv[3])
    store = Store(url, migrate=False)
    if mode == "kill-mid-write":  # parent_id is an iteration id
        run_stage(Stage("writer", "1", CountConfig, _kill_mid_write), CountConfig(), {},
                  iteration_id=parent_id, store=store)
    elif mode == "many":  # parent_id is a run id: one stage run in each of n iterations
        n, tag = int(sys.argv[4]), sys.argv[5]
        for i in range(n):
            with store.session() as s:
                it = repo.get_or_create_iteration(s, parent_id, i)
            run_stage(Stage("stage", "1", CountConfig, write_text), CountConfig(text=f"{tag}-{i}"), {},
                      iteration_id=it.id, store=store)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
