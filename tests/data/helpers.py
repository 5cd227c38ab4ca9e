"""Small builders shared by the data tests."""

from __future__ import annotations


def hh(*turns: str) -> str:
    """An hh transcript from alternating Human / Assistant texts, starting with Human."""
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {text}" for i, text in enumerate(turns))
