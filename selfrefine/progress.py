"""Progress of long steps (training, generation, scoring): a bar on a terminal, log lines elsewhere.

Every step reports through one `Progress`: it logs `what: done/total unit (pct%), rate, time left`
to the `selfrefine.progress` logger each few percent, so the lines reach log files and the Prefect
UI (which collects the `selfrefine` loggers). On an interactive terminal the command line shows a
tqdm bar instead and keeps those lines off the terminal (`terminal_filter`), so the user sees one
moving bar rather than a scroll of lines.
"""

from __future__ import annotations

import logging
import sys
import time

LOGGER_NAME = "selfrefine.progress"
logger = logging.getLogger(LOGGER_NAME)


def bars_enabled() -> bool:
    """A bar is drawn only where someone watches: stderr is a terminal."""
    return sys.stderr.isatty()


def terminal_filter(record: logging.LogRecord) -> bool:
    """For the terminal's log handler when bars are drawn: the bar replaces the progress lines."""
    return record.name != LOGGER_NAME


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """Counts `total` units of one step; `update(n)` after each chunk, `close()` at the end.

    A line is logged when the count crosses the next multiple of `every_percent` (and at least
    `min_interval` seconds after the previous line), and always when the step completes.
    """

    def __init__(self, what: str, total: int, unit: str = "items", *, every_percent: float = 5.0,
                 min_interval: float = 0.0, clock=time.perf_counter):
        self.what, self.total, self.unit = what, max(int(total), 0), unit
        self.every_percent, self.min_interval, self._clock = every_percent, min_interval, clock
        self.done = 0
        self._started = self._last_line = clock()
        self._next_percent = every_percent
        self._bar = None
        if bars_enabled() and self.total:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=what, unit=f" {unit}", dynamic_ncols=True, leave=False)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def line(self) -> str:
        """`what: done/total unit (pct%), rate unit/s, time left`, as logged."""
        elapsed = max(self._clock() - self._started, 1e-9)
        rate = self.done / elapsed
        pct = 100.0 * self.done / self.total if self.total else 100.0
        left = (self.total - self.done) / rate if rate > 0 else None
        tail = "done" if self.done >= self.total else (f"{format_seconds(left)} left" if left is not None else "")
        return f"{self.what}: {self.done}/{self.total} {self.unit} ({pct:.0f}%), {rate:.2f} {self.unit}/s, {tail}"

    def update(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total) if self.total else self.done + n
        if self._bar is not None:
            self._bar.update(n)
        if not self.total:
            return
        pct = 100.0 * self.done / self.total
        finished = self.done >= self.total
        now = self._clock()
        if finished or (pct >= self._next_percent and now - self._last_line >= self.min_interval):
            logger.info(self.line())
            self._last_line = now
            while self._next_percent <= pct:
                self._next_percent += self.every_percent

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
