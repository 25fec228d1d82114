"""Paired comparisons of two models on the same items: whether a difference in accuracy is more than noise.

Two models answer the same items, so their accuracies are not independent samples; what carries the evidence is
the items on which they disagree. McNemar's exact test (a two-sided binomial test on the discordant items, each
equally likely to go either way under the null hypothesis) is the standard test for this design and needs no
large-sample approximation, which matters at the tiny profile's few hundred items.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import comb
from typing import Any

from kit.errors import KitError


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value for ``only_a`` items right only under A and ``only_b`` right only under B
    (1.0 when they never disagree)."""
    if only_a < 0 or only_b < 0:
        raise KitError(f"mcnemar_exact: counts must be >= 0, not {only_a}, {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired(a: Mapping[str, bool], b: Mapping[str, bool]) -> dict[str, Any]:
    """Item id -> right, for two models on the same items: the 2x2 counts, the accuracy difference in points
    (A minus B) and McNemar's exact p-value."""
    if set(a) != set(b):
        missing = sorted(set(a) ^ set(b))
        raise KitError(f"paired: the two models were not scored on the same items ({len(missing)} differ, e.g. "
                       f"{missing[:3]})")
    if not a:
        raise KitError("paired: no items to compare")
    both = sum(a[i] and b[i] for i in a)
    only_a = sum(a[i] and not b[i] for i in a)
    only_b = sum(b[i] and not a[i] for i in a)
    return {"items": len(a), "both right": both, "only A": only_a, "only B": only_b,
            "neither": len(a) - both - only_a - only_b, "difference (points)": 100 * (only_a - only_b) / len(a),
            "McNemar p": mcnemar_exact(only_a, only_b)}
