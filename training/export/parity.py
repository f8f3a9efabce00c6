"""The parity gate: every variant's outputs on the held-out slice against PyTorch's (max and
mean |difference|, label agreement, the task metric), batched runs against one-by-one runs, and
the thresholds that pass or fail a variant."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bundle.batch import Batch
from bundle.manifest import INPUT_NAMES, ParityReport
from training.errors import TrainingError
from training.export.checkpoint import SUMMARIZATION, one_line
from training.export.options import ExportConfig
from training.export.parity_data import Decoding, Example, Pred, Scorer, batch_of
from training.export.stats import Interval, paired_gap, ratio, units, wilson

log = logging.getLogger("training.export")  # one logger name for the whole command

BATCH_CHECK_EXAMPLES = 16  # examples also run one by one to compare with their batched result


def abs_diff(ref: Pred, got: Pred) -> np.ndarray:
    if got.ids is not None and ref.ids is None:  # top-k scores against full probabilities
        return np.abs(np.take_along_axis(ref.values, got.ids, axis=-1) - got.values)
    return np.abs(ref.values.astype(np.float64) - got.values.astype(np.float64))


def agreement_counts(task: str, ref: Pred, got: Pred) -> tuple[int, int]:
    """(agreeing, compared): per token for token-classification, per mask for fill-mask, per
    sentence (chosen among the top 3 or not) for extractive-summarization, per example
    otherwise (qa read from an evaluation file: per question, on the decoded answers instead).
    """
    if task in ("token-classification", "fill-mask", SUMMARIZATION):
        return int((ref.labels == got.labels).sum()), int(ref.labels.size)
    return int(np.array_equal(ref.labels, got.labels)), 1


def metric_counts(task: str, pred: Pred, gold: Any) -> tuple[float, int]:
    """(sum, count) of the task metric against one example's gold: accuracy (multi-label: exact
    match), token accuracy at first sub-tokens, top-1 accuracy at masks (fill-mask), per sentence
    whether being among the top 3 matches the oracle label (extractive-summarization)."""
    if gold is None:
        return 0.0, 0
    g = np.atleast_1d(np.asarray(gold))
    if task == "classification":
        return float(np.array_equal(pred.labels, g)), 1 if pred.labels.size == g.size else 0
    if task == "token-classification":
        keep = g >= 0
        return float((pred.labels[keep] == g[keep]).sum()), int(keep.sum())
    return float((pred.labels == g).sum()), int(g.size)


def gold_units(task: str, examples: Sequence[Example], preds: Sequence[Pred]) -> np.ndarray | None:
    """The task metric's (sum, count) per example against its gold; None when none has gold."""
    pairs = [metric_counts(task, p, e.gold) for p, e in zip(preds, examples, strict=True)]
    if not any(count for _, count in pairs):
        return None
    return units([s for s, _ in pairs], [c for _, c in pairs])


METRIC_NAMES = {
    "classification": "accuracy",
    "token-classification": "token_accuracy",
    "qa": "squad_f1",
    "fill-mask": "top1_accuracy_at_masks",
    SUMMARIZATION: "top3_oracle_agreement",
}


@dataclass
class Figures:
    max_abs_diff: float = 0.0
    sum_abs_diff: float = 0.0
    n_values: int = 0
    agree: int = 0
    compared: int = 0
    examples: int = 0  # with something compared: the sample size of the agreement's interval

    def add(self, task: str, ref: Pred, got: Pred, *, agreement: bool = True) -> None:
        """One example's differences and (unless ``agreement`` is False: it is counted on
        decoded outputs by :meth:`add_decoded`) its agreement."""
        d = abs_diff(ref, got)
        if d.size:
            self.max_abs_diff = max(self.max_abs_diff, float(d.max()))
            self.sum_abs_diff += float(d.sum())
            self.n_values += d.size
        if agreement:
            a, c = agreement_counts(task, ref, got)
            self.agree += a
            self.compared += c
            self.examples += c > 0

    def add_decoded(self, ref: Sequence[str], got: Sequence[str]) -> None:
        """Agreement of decoded outputs (qa: a question's answer), one unit each."""
        self.agree += sum(a == b for a, b in zip(ref, got, strict=True))
        self.compared += len(ref)
        self.examples += len(ref)

    @property
    def agreement(self) -> float | None:
        return self.agree / self.compared if self.compared else None

    @property
    def agreement_ci(self) -> Interval | None:
        share = self.agreement
        return None if share is None else wilson(share, self.examples)


Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def run_batches(
    runner: Runner,
    examples: list[Example],
    batch_size: int,
    pad_id: int,
    split: Callable[..., list[Pred]],
) -> list[Pred]:
    preds: list[Pred] = []
    for start in range(0, len(examples), batch_size):
        batch = batch_of(examples[start : start + batch_size], pad_id)
        preds.extend(split(runner(batch.feed()), batch))
    return preds


def torch_runner(wrapper: Any) -> Runner:
    import torch

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            out = wrapper(*(torch.from_numpy(feed[n]) for n in INPUT_NAMES))
        out = out if isinstance(out, tuple) else (out,)
        return [t.float().numpy() if t.is_floating_point() else t.numpy() for t in out]

    return run


def ort_runner(path: Path, provider: str) -> tuple[Runner, str]:
    import onnxruntime as ort

    providers = (
        [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    )
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as exc:
        raise TrainingError(f"onnxruntime cannot load {path.name}: {one_line(exc)[:200]}") from exc

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(o) for o in session.run(None, feed)]

    return run, session.get_providers()[0]


@dataclass
class Slice:
    """The held-out slice and PyTorch's predictions on it: what every variant is compared with."""

    task: str
    examples: list[Example]
    reference: list[Pred]
    reference_units: np.ndarray | None  # the metric's (sum, count) per example, PyTorch's
    score: Scorer
    split: Callable[[Sequence[np.ndarray], Batch], list[Pred]]
    pad_id: int
    batch_size: int
    data: str  # the file name, or "generated"
    decoding: Decoding | None = None  # qa: windows decode together into one answer a question
    reference_answers: list[str] | None = None  # PyTorch's, by ``decoding``

    @property
    def reference_metric(self) -> float | None:
        return None if self.reference_units is None else ratio(self.reference_units)

    def predict(self, runner: Runner) -> list[Pred]:
        """``runner``'s batched predictions on the slice, batched as the gate batches."""
        return run_batches(runner, self.examples, self.batch_size, self.pad_id, self.split)


@dataclass
class Gap:
    """A variant's task metric against PyTorch's on the same examples."""

    metric: float | None = None
    points: float | None = None  # PyTorch's metric minus the variant's
    interval: Interval | None = None  # its 95 % interval

    @classmethod
    def of(cls, reference: np.ndarray | None, got: np.ndarray | None) -> Gap:
        if got is None:
            return cls()
        paired = paired_gap(reference, got) if reference is not None else None
        return cls(ratio(got), *(paired or (None, None)))


def judge_gap(name: str, gap: Gap, most: float, failures: list[str], unsure: list[str]) -> None:
    """The int8 metric rule: fail when the gap's whole 95 % interval lies above ``most`` points;
    an interval across it (or a gap above it with an interval that is not) is inconclusive."""
    assert gap.metric is not None and gap.points is not None and gap.interval is not None
    said = (
        f"{name} {gap.metric:.2f} is {gap.points:.2f} points below PyTorch's "
        f"(95 % CI {gap.interval.low:.2f} to {gap.interval.high:.2f})"
    )
    if gap.interval.low > most:
        failures.append(f"{said} > {most}")
    elif gap.points > most or most in gap.interval:
        unsure.append(f"{said} vs {most}")


def inconclusive(examples: int, unsure: list[str], failures: list[str]) -> str | None:
    """The report's note on thresholds an interval straddled, when nothing failed outright."""
    if not unsure or failures:
        return None
    return f"inconclusive on {examples} examples: {'; '.join(unsure)}"


def gate_failures(
    variant: str, figs: Figures, batch: Figures, gap: Gap, task: str, conf: ExportConfig
) -> tuple[dict[str, float], list[str], list[str]]:
    """(thresholds, failures, inconclusive) of ``variant``'s parity gate.

    fp32/fp16: max |difference| within the limit, batched and alone. int8 (:mod:`stats`): fails
    when the 95 % interval of the metric gap lies wholly above ``int8_max_metric_drop``, or that
    of agreement wholly below ``int8_min_agreement``; an interval across a threshold passes and
    is listed as inconclusive. Batched against alone must agree fully (a count, not a sample).
    """
    failures: list[str] = []
    unsure: list[str] = []
    if variant != "int8":
        limit = conf.fp32_max_diff if variant == "fp32" else conf.fp16_max_diff
        if figs.max_abs_diff > limit:
            failures.append(f"max |diff| {figs.max_abs_diff:.3g} > {limit:g}")
        if batch.max_abs_diff > limit:
            failures.append(
                f"batched vs one-by-one max |diff| {batch.max_abs_diff:.3g} > {limit:g}"
            )
        return {"max_abs_diff": limit}, failures, unsure
    share, ci = figs.agreement, figs.agreement_ci
    if share is not None and ci is not None:
        low = conf.int8_min_agreement
        said = (
            f"agreement {share:.4f} (95 % CI {ci.low:.4f}-{ci.high:.4f}, {figs.examples} examples)"
        )
        if ci.high < low:
            failures.append(f"{said} < {low}")
        elif share < low or low in ci:
            unsure.append(f"{said} vs {low}")
    if gap.points is not None and gap.interval is not None and gap.metric is not None:
        judge_gap(METRIC_NAMES[task], gap, conf.int8_max_metric_drop, failures, unsure)
    if batch.agreement is not None and batch.agreement < conf.int8_min_batch_agreement:
        failures.append(
            f"batched vs one-by-one agreement {batch.agreement:.4f} < "
            f"{conf.int8_min_batch_agreement}"
        )
    thresholds = {
        "max_metric_drop": conf.int8_max_metric_drop,
        "min_agreement": conf.int8_min_agreement,
        "min_batch_agreement": conf.int8_min_batch_agreement,
    }
    return thresholds, failures, unsure


def parity(
    variant: str,
    runner: Runner,
    provider: str,
    held_out: Slice,
    conf: ExportConfig,
    *,
    gate: bool = True,
    note: str | None = None,
    preds: list[Pred] | None = None,
    answers: list[str] | None = None,
) -> ParityReport:
    """Run ``variant`` on the slice batched (unless its batched ``preds`` are given) and (the
    first few) one by one; apply its gate. ``answers`` (qa): the answers to judge instead of
    those decoded from ``preds`` (a cascade's: :mod:`training.export.rerun`)."""
    task = held_out.task
    if preds is None:
        preds = held_out.predict(runner)
    figs = Figures()
    decoding, reference = held_out.decoding, held_out.reference_answers
    for ref, got in zip(held_out.reference, preds, strict=True):
        figs.add(task, ref, got, agreement=decoding is None)
    if decoding is None or reference is None:
        units = held_out.score(preds)
    else:
        decoded = decoding.answers(preds) if answers is None else answers
        figs.add_decoded(reference, decoded)
        units = decoding.metric(decoded)
    gap = Gap.of(held_out.reference_units, units)
    batch = Figures()  # batched (padded among others) against alone (no padding)
    for i, ex in enumerate(held_out.examples[:BATCH_CHECK_EXAMPLES]):
        alone = batch_of([ex], held_out.pad_id)
        (single,) = held_out.split(runner(alone.feed()), alone)
        batch.add(task, preds[i], single)
    thresholds, failures, unsure = gate_failures(variant, figs, batch, gap, task, conf)
    status: Literal["passed", "failed", "not_checked"] = "not_checked"
    if gate:
        status = "failed" if failures else "passed"
    more = inconclusive(len(held_out.examples), unsure, failures)
    if more:
        note = f"{note}; {more}" if note else more
    ci = figs.agreement_ci
    return ParityReport(
        status=status,
        provider=provider,
        examples=len(held_out.examples),
        data=held_out.data,
        max_abs_diff=figs.max_abs_diff,
        mean_abs_diff=figs.sum_abs_diff / figs.n_values if figs.n_values else None,
        agreement=figs.agreement,
        agreement_ci=ci.as_list() if ci is not None else None,
        metric_name=METRIC_NAMES[task] if gap.metric is not None else None,
        metric=gap.metric,
        reference_metric=held_out.reference_metric,
        metric_gap=gap.points,
        metric_gap_ci=gap.interval.as_list() if gap.interval is not None else None,
        batch_max_abs_diff=batch.max_abs_diff,
        batch_agreement=batch.agreement,
        thresholds=thresholds,
        failures=failures,
        note=note,
    )


def log_report(variant: str, r: ParityReport) -> None:
    """One log line of a variant's parity figures."""
    log.info(
        "parity %s [%s on %s, %d examples]: max|diff| %s, agreement %s, %s %s (PyTorch %s), "
        "batched-vs-single max|diff| %s agreement %s%s",
        variant,
        r.status,
        r.provider,
        r.examples,
        _fmt(r.max_abs_diff),
        _fmt(r.agreement),
        r.metric_name or "metric",
        _fmt(r.metric),
        _fmt(r.reference_metric),
        _fmt(r.batch_max_abs_diff),
        _fmt(r.batch_agreement),
        f"; FAILED: {'; '.join(r.failures)}" if r.failures and r.status == "failed" else "",
    )


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"
