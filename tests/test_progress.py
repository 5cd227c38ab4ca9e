"""Progress lines of long steps: when they are logged, what they say, and the terminal's bar."""

from __future__ import annotations

import logging

import pytest

from selfrefine import progress
from selfrefine.progress import Progress, format_seconds


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == progress.LOGGER_NAME]


def test_a_line_each_few_percent_with_rate_and_time_left(caplog):
    clock = Clock()
    with caplog.at_level(logging.INFO, logger=progress.LOGGER_NAME):
        with Progress("judge scoring", 200, "prompts", every_percent=25, clock=clock) as p:
            for _ in range(200):
                clock.now += 0.5
                p.update(1)
    assert _lines(caplog) == [
        "judge scoring: 50/200 prompts (25%), 2.00 prompts/s, 1m15s left",
        "judge scoring: 100/200 prompts (50%), 2.00 prompts/s, 50s left",
        "judge scoring: 150/200 prompts (75%), 2.00 prompts/s, 25s left",
        "judge scoring: 200/200 prompts (100%), 2.00 prompts/s, done",
    ]


def test_big_chunks_log_once_and_min_interval_holds_lines_back(caplog):
    clock = Clock()
    with caplog.at_level(logging.INFO, logger=progress.LOGGER_NAME):
        p = Progress("generation", 100, "prompts", every_percent=5, min_interval=10, clock=clock)
        clock.now = 11
        p.update(40)  # crosses eight boundaries: one line
        clock.now = 12
        p.update(10)  # 1 s after the last line: held back
        clock.now = 30
        p.update(10)
        p.update(40)  # the end is always logged
    assert [line.split(" (")[1].split(")")[0] for line in _lines(caplog)] == ["40%", "60%", "100%"]


def test_format_seconds():
    assert [format_seconds(s) for s in (4.4, 75, 3725)] == ["4s", "1m15s", "1h02m"]


def test_the_terminal_shows_a_bar_instead_of_the_lines(monkeypatch, capsys):
    monkeypatch.setattr(progress, "bars_enabled", lambda: True)
    with Progress("policy_round training", 3, "steps") as p:
        for _ in range(3):
            p.update(1)
    assert "policy_round training" in capsys.readouterr().err  # tqdm draws on stderr
    record = logging.LogRecord(progress.LOGGER_NAME, logging.INFO, __file__, 1, "x", None, None)
    other = logging.LogRecord("selfrefine.tasks", logging.WARNING, __file__, 1, "x", None, None)
    assert not progress.terminal_filter(record) and progress.terminal_filter(other)


@pytest.mark.parametrize("total", [0])
def test_an_empty_step_logs_nothing(caplog, total):
    with caplog.at_level(logging.INFO, logger=progress.LOGGER_NAME):
        with Progress("generation", total) as p:
            p.update(0)
    assert _lines(caplog) == []
