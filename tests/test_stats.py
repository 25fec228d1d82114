"""McNemar's exact test and the paired counts behind the Cas-SEAT paired table."""

from __future__ import annotations

import pytest

from kit.core.stats import mcnemar_exact, paired
from kit.errors import KitError


def test_mcnemar_exact_matches_the_binomial_tail():
    # Two-sided: twice the lower tail of Binomial(n, 1/2) at the smaller count, capped at 1.
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(9, 1) == pytest.approx(2 * (1 + 10) / 1024)
    assert mcnemar_exact(10, 10) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 7) == mcnemar_exact(7, 3)
    # A 50 : 30 split of 80 discordant items is significant at 5 %, 45 : 35 is not.
    assert mcnemar_exact(50, 30) < 0.05 < mcnemar_exact(45, 35)
    with pytest.raises(KitError):
        mcnemar_exact(-1, 2)


def test_paired_counts_each_cell_and_the_difference():
    a = {"1": True, "2": True, "3": False, "4": False, "5": True}
    b = {"1": True, "2": False, "3": True, "4": False, "5": False}
    result = paired(a, b)
    assert (result["both right"], result["only A"], result["only B"], result["neither"]) == (1, 2, 1, 1)
    assert result["items"] == 5 and result["difference (points)"] == pytest.approx(20.0)
    assert result["McNemar p"] == pytest.approx(mcnemar_exact(2, 1))
    with pytest.raises(KitError, match="same items"):
        paired(a, {**b, "6": True})
