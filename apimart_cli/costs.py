"""Costs, by one rule everywhere: as data, to 4 decimals; as text, trailing zeros trimmed."""

from __future__ import annotations


def cost_number(value: float) -> float:
    """A cost as the service reports it, to 4 decimals: a sum of 0.05s is 0.15, never
    0.15000000000000002. The one rule for costs, as data and as text."""
    return round(value, 4)


def cost_text(value: float) -> str:
    """A cost for people: up to 4 decimals, trailing zeros trimmed (0.1, 0.1056, 15)."""
    text = f"{cost_number(value):.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text
