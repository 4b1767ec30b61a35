"""95% confidence intervals for accuracies (Wilson score interval), as every reported figure carries one.

Usage:

```python
from backtrack_trl.evaluation.intervals import format_with_interval, wilson_interval

low, high = wilson_interval(235, 500)  # (0.426, 0.514)
print(format_with_interval(47.0, 500))  # 47.0 [42.7, 51.4]
```
"""

from __future__ import annotations

import math


__all__ = ["Z_95", "format_with_interval", "percent_interval", "wilson_interval"]

Z_95 = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``successes / n`` (fractions in 0..1).

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 or n successes.
    """
    if n <= 0:
        raise ValueError(f"n={n}: an interval needs at least one trial.")
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} must be between 0 and n={n}.")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def percent_interval(percent: float, n: int) -> tuple[float, float]:
    """The 95% Wilson interval, in percent, of an accuracy given in percent over ``n`` problems."""
    low, high = wilson_interval(round(percent * n / 100), n)
    return 100 * low, 100 * high


def format_with_interval(percent: float | None, n: int | None, digits: int = 1) -> str:
    """``"47.0 [42.7, 51.4]"`` for an accuracy in percent over ``n`` problems; the bare value when n is unknown."""
    if percent is None or (isinstance(percent, float) and math.isnan(percent)):
        return "-"
    if not n:
        return f"{percent:.{digits}f}"
    low, high = percent_interval(percent, n)
    return f"{percent:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
