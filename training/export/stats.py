"""The parity gate's statistics: how sure a held-out slice can make us of a variant's cost.

A task metric is a ratio over units (examples, or tokens grouped by example): ``sum / count`` per
example. The gap between PyTorch and a variant is measured on the *same* examples, so it is a
paired difference; its 95 % interval comes from the ratio estimator's linearised variance with
the example as the sampling unit (tokens of one sentence are not independent draws). Agreement
(the share of top labels equal to PyTorch's) gets a Wilson score interval with the number of
examples as its sample size: exact for per-example tasks, conservative for per-token ones.

A corpus-level metric that is not such a ratio (translation's BLEU) gets a paired bootstrap
interval instead: the sentences resampled with replacement, the same draw for both sides.

The gate fails a variant only when its whole interval lies past a threshold: a loss the slice
shows to exceed the allowed one, not a few flipped examples on a small slice. An interval that
straddles a threshold passes and is reported as inconclusive, with how many examples it had.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Z95 = 1.959964  # two-sided 95 %


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def as_list(self) -> list[float]:
        return [self.low, self.high]

    def __contains__(self, x: float) -> bool:
        return self.low <= x <= self.high


def units(sums: list[float], counts: list[int]) -> np.ndarray:
    """(examples, 2): the metric's sum and count per example."""
    return np.asarray([sums, counts], dtype=np.float64).T.reshape(-1, 2)


def ratio(u: np.ndarray) -> float | None:
    """The metric in % of per-example (sum, count) units; None without any count."""
    total = float(u[:, 1].sum()) if len(u) else 0.0
    return 100.0 * float(u[:, 0].sum()) / total if total else None


def paired_gap(reference: np.ndarray, variant: np.ndarray) -> tuple[float, Interval] | None:
    """(reference minus variant in points, its 95 % interval) over the same examples; None when
    nothing was scored."""
    if reference.shape != variant.shape or not np.array_equal(reference[:, 1], variant[:, 1]):
        raise ValueError("the gap is paired: both need the same examples and counts")
    counts = reference[:, 1]
    scored = counts > 0
    n, total = int(scored.sum()), float(counts.sum())
    if not n:
        return None
    diff = (reference[:, 0] - variant[:, 0])[scored]
    gap = float(diff.sum()) / total
    if n < 2:
        return 100.0 * gap, Interval(-math.inf, math.inf)
    residual = diff - gap * counts[scored]
    se = math.sqrt(n / (n - 1) * float((residual**2).sum())) / total
    return 100.0 * gap, Interval(100.0 * (gap - Z95 * se), 100.0 * (gap + Z95 * se))


def paired_bootstrap(
    reference: np.ndarray,
    variant: np.ndarray,
    score: Callable[[np.ndarray], float],
    samples: int = 1000,
    seed: int = 0,
) -> tuple[float, Interval]:
    """(reference minus variant, its 95 % interval) of a corpus-level metric that is not a ratio
    of per-example sums (BLEU): ``score`` maps summed sufficient statistics (a row per example)
    to the metric. The interval is the percentile one of ``samples`` resamplings of the examples
    with replacement, the same draw for both sides (paired bootstrap, Koehn 2004)."""
    if reference.shape != variant.shape:
        raise ValueError("the gap is paired: both need the same examples")
    n = len(reference)
    gap = score(reference.sum(0)) - score(variant.sum(0))
    if n < 2:
        return gap, Interval(-math.inf, math.inf)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(samples):  # one draw at a time: a long slice's draws need not all fit
        d = rng.integers(0, n, size=n)
        diffs.append(score(reference[d].sum(0)) - score(variant[d].sum(0)))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return gap, Interval(float(low), float(high))


def wilson(share: float, n: int) -> Interval:
    """Wilson score 95 % interval of a proportion ``share`` observed on ``n`` draws."""
    if n <= 0:
        return Interval(0.0, 1.0)
    z2 = Z95 * Z95
    centre = (share + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(share * (1 - share) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return Interval(max(0.0, centre - half), min(1.0, centre + half))
