"""95% Wilson intervals of accuracies and their table text."""

import pytest

from backtrack_trl.evaluation.intervals import format_with_interval, wilson_interval


def test_wilson_interval_known_values():
    low, high = wilson_interval(235, 500)
    assert low == pytest.approx(0.42665, abs=1e-4) and high == pytest.approx(0.51381, abs=1e-4)
    assert wilson_interval(0, 300) == pytest.approx((0.0, 0.01264), abs=1e-4)
    assert format_with_interval(47.0, 500) == "47.0 [42.7, 51.4]"
    assert format_with_interval(47.0, None) == "47.0"
    with pytest.raises(ValueError, match="at least one"):
        wilson_interval(0, 0)
