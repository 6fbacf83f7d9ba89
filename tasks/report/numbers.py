"""How every report prints a number: at a fixed number of places, and never as -0.000. A difference that rounds to
zero reads +0.000 (0.000 unsigned), whatever the sign of what was rounded, so a report never claims a loss it does
not show."""
from __future__ import annotations


def fixed(value: float, decimals: int, signed: bool = False) -> str:
    """`value` at `decimals` places, with its sign (+ or -) when `signed`; a value that rounds to zero is +0.000."""
    rounded = round(float(value), decimals) + 0.0  # round(-0.0001, 3) is -0.0; adding +0.0 gives +0.0
    return f"{rounded:+.{decimals}f}" if signed else f"{rounded:.{decimals}f}"
