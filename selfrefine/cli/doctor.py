"""`selfrefine doctor [--fix] [--json]`: check the store for what faults leave behind.

Exit 0 when nothing is wrong (after `--fix`, when everything found was repaired), 1 when
problems remain; errors reaching the store exit 2 like every other command.
"""

from __future__ import annotations

import argparse
import json

PROBLEMS_EXIT = 1


def register(sub: argparse._SubParsersAction) -> None:
    doc = sub.add_parser("doctor", help="verify every artifact's digest and file, find stage runs left "
                                        "running by dead processes, orphan artifacts, unknown and "
                                        "temporary files")
    doc.add_argument("--fix", action="store_true",
                     help="mark stale runs failed and remove abandoned staging directories "
                          "(never deletes an artifact, an object or a row)")
    doc.add_argument("--json", action="store_true", help="print the findings as JSON")
    doc.set_defaults(func=_doctor)


def _doctor(args) -> int:
    from selfrefine.storage.artifacts import ArtifactStore
    from selfrefine.storage.doctor import repair, run_checks
    from selfrefine.storage.engine import default_store

    store, artifacts = default_store(), ArtifactStore()
    findings = run_checks(store, artifacts)
    repaired = repair(store, artifacts, findings) if args.fix else []
    remaining = run_checks(store, artifacts) if repaired else findings
    if args.json:
        print(json.dumps({"findings": [f.to_json() for f in findings],
                          "repaired": [f.to_json() for f in repaired],
                          "remaining": [f.to_json() for f in remaining]}, indent=2))
    else:
        _print_text(findings, repaired, remaining, args.fix)
    return PROBLEMS_EXIT if remaining else 0


def _print_text(findings, repaired, remaining, fix: bool) -> None:
    if not findings:
        print("no problems found")
        return
    for f in findings:
        mark = "fixed " if f in repaired else ""
        print(f"{mark}{f.check}  {f.subject}  {f.message}")
    if fix:
        print(f"{len(findings)} problem(s) found, {len(repaired)} repaired, {len(remaining)} remain")
    else:
        fixable = sum(f.fixable for f in findings)
        hint = f"; `selfrefine doctor --fix` repairs {fixable} of them" if fixable else ""
        print(f"{len(findings)} problem(s) found{hint}")
