"""Entry point: parse arguments, run one command, turn known errors into one line and an exit code.

A `SelfRefineError` (bad input, unknown id, unreachable store...) prints `selfrefine: <message>`
on stderr and exits non-zero; anything else is a bug and keeps its traceback. `--debug` shows the
traceback for known errors too.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from selfrefine import progress
from selfrefine.errors import SelfRefineError
from selfrefine.provenance import redact_text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear line, exit 2, no usage dump
        self.exit(2, f"selfrefine: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from selfrefine import config_reference
    from selfrefine.cli import audit, db, doctor, export, inspect, run, server

    parser = _Parser(prog="selfrefine", description="Iterative self-refinement of an LLM judge and policy.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for known errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in (run, inspect, audit, db, doctor, server, export, config_reference):
        module.register(sub)
    return parser


def _quiet_progress_bars() -> None:
    """Model loading and dataset maps draw tqdm bars; selfrefine logs progress itself."""
    # selfrefine's own progress logs (stage, step, examples/s) also go to the Prefect UI.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "selfrefine")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # transformers takes its bars' switch from huggingface_hub's global state when it is first
    # imported, so setting that state here keeps its bars off without importing transformers (and
    # torch, a second a command) in commands that never load a model.
    from huggingface_hub import constants
    from huggingface_hub.utils import disable_progress_bars

    if constants.HF_HUB_DISABLE_PROGRESS_BARS is not False:  # False: the user asked for the bars
        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def _without_run_failure_logs(record: logging.LogRecord) -> bool:
    """Keep Prefect's report of a failed flow or task run (its exception and traceback) off the
    terminal: the command prints the one-line reason itself, and the Prefect UI (which gets the
    record through its own handler) and `selfrefine show` keep the full text. --debug shows it."""
    return not (record.levelno >= logging.ERROR and record.name in ("prefect.flow_runs", "prefect.task_runs"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3"):  # one line per HTTP request to the Prefect API
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Progress of training, generation and scoring shows without -v: a bar on a terminal, else
    # a line each few percent (the lines also reach the Prefect UI).
    logging.getLogger(progress.LOGGER_NAME).setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        if getattr(handler, "stream", None) is sys.stderr:  # the terminal, not the Prefect API
            if not args.debug:
                handler.addFilter(_without_run_failure_logs)
            if progress.bars_enabled():
                handler.addFilter(progress.terminal_filter)
    _quiet_progress_bars()
    # Prefect servers this command starts would report usage to Prefect over the network; selfrefine
    # runs offline, where each heartbeat fails with an error in the log.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    try:
        return int(args.func(args) or 0)
    except SelfRefineError as exc:
        if args.debug:
            traceback.print_exc()
        lines = redact_text(str(exc)).splitlines() or [type(exc).__name__]
        more = f" [+{len(lines) - 1} more lines: rerun with --debug]" if len(lines) > 1 and not args.debug else ""
        print(f"selfrefine: {lines[0]}{more}", file=sys.stderr)
        if args.debug:
            print("\n".join(lines[1:]), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("selfrefine: interrupted", file=sys.stderr)
        return 130


