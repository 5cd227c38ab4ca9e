"""`selfrefine export ID DIR`: a run's judge and policy as Hugging Face model directories, optionally pushed."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a judge or policy (or a run's final ones) as a Hugging Face "
                                      "model directory with a model card; optionally push it to the Hub")
    p.add_argument("id", help="model artifact, run, iteration or stage run id (or unique prefix)")
    p.add_argument("dir", help="output directory (a run or iteration writes DIR/policy and DIR/judge)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists and is not empty")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload to this Hub model repo "
                   "(a run or iteration: REPO_ID-policy and REPO_ID-judge)")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.set_defaults(func=_export)


def _export(args) -> int:
    from selfrefine.export.hub import push
    from selfrefine.export.writer import export
    from selfrefine.storage.artifacts import ArtifactStore
    from selfrefine.storage.engine import default_store

    written = export(args.id, args.dir, store=default_store(), artifacts=ArtifactStore(), overwrite=args.overwrite)
    for item in written:
        print(f"{item.role}: {item.kind} {item.directory} (artifact {item.artifact_id})")
    if args.push_to_hub:
        roles = sorted({item.role for item in written})
        for role in roles:  # one directory per model, as `export` lays them out
            directory = Path(args.dir).expanduser() / (role if len(roles) > 1 else "")
            repo_id = args.push_to_hub if len(roles) == 1 else f"{args.push_to_hub}-{role}"
            print(f"pushed {directory} to {push(directory, repo_id, args.private)}")
    return 0
