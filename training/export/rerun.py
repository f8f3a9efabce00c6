"""QA int8 as a cascade: int8 answers, and the questions it is least sure of are answered again
by the fp32 graph (the service does this with :class:`bundle.manifest.RerunSpec`).

int8 changes a QA answer mostly where two spans nearly tie: SQuAD's changed answers are near
ties (README: int8 methods). A question is rerun when its int8 answer's margin
(:attr:`bundle.qa.QAPrediction.margin`: best span over the best span with other text) is at
most a threshold. The threshold is fitted on the parity gate's held-out questions, cross-fitted
so that no question picks the threshold it is judged with: the smallest threshold that brings
agreement with PyTorch to the target on one half is applied to the other half, and the other way
round. The gate judges that cross-fitted cascade; the bundle serves the larger of the two
thresholds (more reruns, never fewer than either half was judged with).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bundle.manifest import RerunSpec, VariantName
from training.export.parity import Slice
from training.export.parity_data import Pred
from training.export.stats import ratio

log = logging.getLogger("training.export")  # one logger name for the whole command


def smallest_threshold(
    margin: np.ndarray, alone_ok: np.ndarray, again_ok: np.ndarray, target: float
) -> float:
    """The smallest margin threshold whose cascade agrees on at least ``target`` of these
    questions (-inf: none needs a rerun; past the largest finite margin where no threshold
    reaches it). ``alone_ok``/``again_ok``: whether the first graph's / the rerun graph's answer
    agrees with the reference, per question. The threshold lies midway between the margin it
    must include and the next one, so that a margin computed again in another batch (equal to
    rounding) falls on the same side."""
    candidates = np.unique(margin[np.isfinite(margin)])
    if alone_ok.mean() >= target or not len(candidates):
        return -np.inf
    last = len(candidates) - 1  # where no threshold reaches the target: rerun every one
    k = next(
        (k for k, t in enumerate(candidates)
         if np.where(margin <= t, again_ok, alone_ok).mean() >= target),
        last,
    )  # fmt: skip
    if k < last:
        return float((candidates[k] + candidates[k + 1]) / 2)
    return float(candidates[k] + 1e-3 * (1 + abs(candidates[k])))


@dataclass(frozen=True)
class Fit:
    """A cross-fitted cascade on the held-out questions."""

    rerun: np.ndarray  # bool per question: rerun with the threshold fitted on the other half
    thresholds: tuple[float, float]  # fitted on each half
    served: float  # the larger: what the bundle serves (-inf: no rerun)


def cross_fit(
    margin: np.ndarray, alone_ok: np.ndarray, again_ok: np.ndarray, target: float, seed: int = 0
) -> Fit:
    """Split the questions in two at random (``seed``); each half's threshold decides the other
    half's reruns."""
    n = len(margin)
    order = np.random.default_rng(seed).permutation(n)
    halves = (order[: n // 2], order[n // 2 :])
    rerun = np.zeros(n, dtype=bool)
    thresholds = []
    for pick, apply in (halves, halves[::-1]):
        t = smallest_threshold(margin[pick], alone_ok[pick], again_ok[pick], target)
        thresholds.append(t)
        rerun[apply] = margin[apply] <= t
    return Fit(rerun, (thresholds[0], thresholds[1]), max(thresholds))


@dataclass(frozen=True)
class Cascade:
    """What the gate judges and the manifest records of a cascade."""

    spec: RerunSpec
    answers: list[str]  # cross-fitted, per question: the rerun graph's if rerun, else the first's
    thresholds: tuple[float, float]


def fit_cascade(
    held_out: Slice,
    preds: Sequence[Pred],
    again: Sequence[Pred],
    target: float,
    variant: VariantName = "fp32",
    seed: int = 0,
) -> Cascade | None:
    """The cascade of ``preds`` (int8, batched) with ``again`` (the ``variant`` graph's, on the
    same windows) on a QA slice, or None where none applies: the slice is not decoded (no QA
    evaluation file), or the first graph alone reaches ``target``."""
    decoding, reference = held_out.decoding, held_out.reference_answers
    if decoding is None or reference is None:
        return None
    first = decoding.decode(preds)
    alone = decoding.texts(first)
    rerun_answers = decoding.answers(again)
    margin = np.array([np.inf if p is None else p.margin for p in first])
    alone_ok = np.array([a == r for a, r in zip(alone, reference, strict=True)])
    again_ok = np.array([a == r for a, r in zip(rerun_answers, reference, strict=True)])
    if alone_ok.mean() >= target:
        return None
    fit = cross_fit(margin, alone_ok, again_ok, target, seed)
    if not np.isfinite(fit.served):
        return None

    def mixed(rerun: np.ndarray) -> list[str]:
        return [b if r else a for a, b, r in zip(alone, rerun_answers, rerun, strict=True)]

    answers, served = mixed(fit.rerun), margin <= fit.served
    at_served = mixed(served)
    share = float(served.mean())
    spec = RerunSpec(
        variant=variant,
        max_margin=max(0.0, fit.served),
        share=share,
        alone_agreement=float(alone_ok.mean()),
        agreement=float(np.mean([a == r for a, r in zip(at_served, reference, strict=True)])),
        metric=ratio(decoding.metric(at_served)),
    )
    log.info(
        "int8 cascade: questions with margin <= %.4g rerun in %s (%.1f %% of %d; thresholds "
        "%.4g / %.4g on each half); agreement %.4f alone, %.4f cross-fitted",
        spec.max_margin,
        variant,
        100 * share,
        len(margin),
        *fit.thresholds,
        alone_ok.mean(),
        np.mean([a == r for a, r in zip(answers, reference, strict=True)]),
    )
    return Cascade(spec, answers, fit.thresholds)
