"""What differs between tasks: text -> work items (pre), batch outputs -> rows (split), rows ->
answers (post). The batcher and the backend in between are the same for every task.

- `prepare` tokenizes with the bundle's own ``tokenizer.json`` (the `tokenizers` library, batched;
  called off the event loop) and refuses bad input with a `ValidationFailedError` (422).
- `split` runs in the inference worker thread: it cuts a batch's outputs into per-row arrays
  (dropping padding), so a request only ever sees its own rows.
- `finish` turns a request's rows into its answers (softmax/sigmoid top-k, QA span decoding with
  `bundle.qa` exactly as in offline evaluation, fill-mask top-k, entity grouping, extractive
  summaries with `bundle.extractive` exactly as in offline evaluation).

QA reads a long context as overlapping windows, as training does (``training/tasks/qa.py``):
question first (cut to ``max_query_length`` tokens), context second, ``only_second``
truncation, consecutive windows sharing ``doc_stride`` context tokens; every window is one work
item, so one question may span several batches, and `bundle.qa.decode` picks the best span over
all of its windows.

Extractive summarisation splits a document into sentences (with character spans) and packs them
as training does (``training/tasks/summarization.py``, both through `bundle.extractive`): ``[CLS] s1
[SEP] [CLS] s2 [SEP] ...``, segments alternating per sentence, whole sentences up to the max
length; one work item per document, scored at each sentence's [CLS].
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer

from app.backend import RowOutput
from app.errors import ValidationFailedError
from app.schemas import (
    ClassifyResult,
    Entity,
    FillMaskResult,
    LabelScore,
    MaskPrediction,
    QAAnswer,
    QAPair,
    QAResult,
    SummarizeResult,
    SummarySentence,
    Token,
    TokenClassifyResult,
    TokenizeResult,
    TokenScore,
    TranslateResult,
)
from bundle import extractive
from bundle import qa as qa_decode
from bundle.batch import (
    Batch,
    Outputs,
    WorkItem,
    mask_rows,
    token_positions,
    token_rows,
    whole_rows,
)
from bundle.decoding import detokenize
from bundle.manifest import LOGITS, QA_OUTPUTS, TOPK_OUTPUTS, Bundle, Task

__all__ = [
    "TASK_MODELS",
    "Classification",
    "ExtractiveSummarization",
    "FillMask",
    "Prepared",
    "QuestionAnswering",
    "TaskModel",
    "TokenClassification",
    "Translation",
    "group_entities",
    "make_task_model",
]

TextInput = str | tuple[str, str]
FloatArray = npt.NDArray[np.float64]
QA_START, QA_END = QA_OUTPUTS
POSITIONS, TOP_IDS, TOP_SCORES = TOPK_OUTPUTS
QA_N_BEST = 20  # candidate spans scored per question (as training's n_best_size)
FILL_MASK_LOGITS_TOP_K = 50  # most candidates per mask from a full-logits fill-mask graph


@dataclass
class Prepared:
    """A request after tokenization.

    Attributes:
        items: the work items to batch (QA: one per window), in order.
        tokens: real tokens over all items (reported as usage).
        state: what `finish` needs back (encodings, contexts, window counts...).
    """

    items: list[WorkItem]
    tokens: int
    state: Any = None


def softmax(x: npt.ArrayLike, axis: int = -1) -> FloatArray:
    z = np.asarray(x, dtype=np.float64)
    z = np.exp(z - z.max(axis=axis, keepdims=True))
    out: FloatArray = z / z.sum(axis=axis, keepdims=True)
    return out


def sigmoid(x: npt.ArrayLike) -> FloatArray:
    out: FloatArray = 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))
    return out


class TaskModel:
    """Pre- and post-processing for one bundle; subclasses add `prepare` and `finish`.

    Args:
        bundle: the verified bundle.
    """

    task: ClassVar[Task]

    def __init__(self, bundle: Bundle) -> None:
        m = bundle.manifest
        self.bundle = bundle
        self.name = m.name
        self.max_length = m.tokenizer.max_length
        self.special_ids = m.tokenizer.special_token_ids
        tok = Tokenizer.from_file(str(bundle.tokenizer_file))
        tok.no_padding()
        tok.enable_truncation(self.max_length, strategy=m.tokenizer.truncation)
        self.tokenizer = tok

    # --- shared helpers ---

    def encode(self, inputs: Sequence[TextInput], tokenizer: Tokenizer | None = None) -> list[Any]:
        """Encodings of `inputs` (texts or pairs), batched; tokenizer failures become 422."""
        tok = tokenizer or self.tokenizer
        try:
            return list(tok.encode_batch(list(inputs)))
        except Exception as exc:  # the Rust tokenizer raises plain Exceptions
            raise ValidationFailedError(f"the input could not be tokenized: {exc}") from exc

    def check_length(self, encodings: Sequence[Encoding], truncate: bool) -> None:
        """With ``truncate=False`` refuse inputs longer than the model's max length."""
        if truncate:
            return
        for i, enc in enumerate(encodings):
            if enc.overflowing:
                extra = sum(len(o.ids) for o in enc.overflowing)
                raise ValidationFailedError(
                    f"input {i} is longer than the model's max length ({self.max_length} "
                    f"tokens); shorten it or send truncate=true",
                    details={"index": i, "max_length": self.max_length, "overflow_tokens": extra},
                )

    @staticmethod
    def items_of(encodings: Sequence[Encoding]) -> list[WorkItem]:
        return [WorkItem.of(e.ids, e.type_ids) for e in encodings]

    def split(self, outputs: Outputs, batch: Batch) -> list[Outputs]:
        """Row i of every output (classification); per-token tasks cut the padding off."""
        return whole_rows(outputs, batch.size)

    def unsure(
        self, prepared: Prepared, rows: Sequence[RowOutput], max_margin: float
    ) -> list[list[int]]:
        """The inputs a cascade answers again (`bundle.manifest.RerunSpec`): per such input,
        the indices of its items. Only qa has a margin; other tasks rerun nothing."""
        return []

    def warmup_items(self, size: int, length: int) -> list[WorkItem]:
        """`size` items of `length` tokens ([CLS] ... [SEP]) to run before serving."""
        length = max(2, min(length, self.max_length))
        cls_id, sep_id = self.special_ids["cls"], self.special_ids["sep"]
        filler = self.special_ids.get("unk", sep_id)
        ids = [cls_id, *([filler] * (length - 2)), sep_id]
        if "mask" in self.special_ids and length > 2:
            ids[1] = self.special_ids["mask"]  # fill-mask graphs need a mask to read
        return [WorkItem.of(ids) for _ in range(size)]

    def tokenize(self, inputs: Sequence[TextInput]) -> list[TokenizeResult]:
        """Tokens with ids and character offsets (the /v1/tokenize debugging aid)."""
        out = []
        for enc in self.encode(inputs):
            tokens = [
                Token(id=i, token=t, start=s, end=e, type_id=tt, special=bool(sp))
                for i, t, (s, e), tt, sp in zip(
                    enc.ids,
                    enc.tokens,
                    enc.offsets,
                    enc.type_ids,
                    enc.special_tokens_mask,
                    strict=True,
                )
            ]
            out.append(TokenizeResult(tokens=tokens, truncated=bool(enc.overflowing)))
        return out


class Classification(TaskModel):
    task = "classification"

    def __init__(self, bundle: Bundle) -> None:
        super().__init__(bundle)
        self.labels = bundle.manifest.labels
        self.multi_label = bundle.manifest.multi_label

    def prepare(self, inputs: Sequence[TextInput], truncate: bool) -> Prepared:
        encodings = self.encode(inputs)
        self.check_length(encodings, truncate)
        items = self.items_of(encodings)
        return Prepared(items, sum(it.length for it in items))

    def finish(
        self, prepared: Prepared, rows: Sequence[RowOutput], top_k: int | None
    ) -> list[ClassifyResult]:
        k = len(self.labels) if top_k is None else min(top_k, len(self.labels))
        results = []
        for row in rows:
            logits = row.arrays[LOGITS]  # (labels,)
            scores = sigmoid(logits) if self.multi_label else softmax(logits)
            order = np.argsort(-scores, kind="stable")[:k]
            results.append(
                ClassifyResult(
                    labels=[
                        LabelScore(label=self.labels[j], score=float(scores[j]))
                        for j in order.tolist()
                    ]
                )
            )
        return results


@dataclass
class _QAState:
    contexts: list[str]
    windows: list[int]  # windows per question, in item order
    offsets: list[npt.NDArray[np.int64]]  # per window (tokens, 2), -1 off the context


class QuestionAnswering(TaskModel):
    """Extractive QA over sliding windows.

    Args:
        doc_stride: context tokens shared by consecutive windows (capped per model so that
            a window always advances); None: the bundle's (its fine-tuning run's).
        max_query_length: questions are cut to this many tokens (capped at a quarter of the
            model's max length); None: the bundle's.
    """

    task = "qa"

    def __init__(
        self, bundle: Bundle, doc_stride: int | None = None, max_query_length: int | None = None
    ) -> None:
        super().__init__(bundle)
        spec = bundle.qa
        self.max_query_length, self.doc_stride = qa_decode.window_sizes(
            self.max_length,
            spec.doc_stride if doc_stride is None else doc_stride,
            spec.max_query_length if max_query_length is None else max_query_length,
        )
        self.max_answer_length = spec.max_answer_length
        self.tokenizer.enable_truncation(
            self.max_length, stride=self.doc_stride, strategy="only_second"
        )
        plain = Tokenizer.from_str(self.tokenizer.to_str())
        plain.no_truncation()
        self.question_tokenizer = plain

    def _cut_question(self, question: str, encoding: Encoding) -> str:
        question = question.lstrip()  # leading spaces would only waste question tokens
        if len(encoding.ids) > self.max_query_length:
            question = question[: encoding.offsets[self.max_query_length - 1][1]]
        return question

    def prepare(self, pairs: Sequence[QAPair]) -> Prepared:
        questions = [p.question.lstrip() for p in pairs]
        try:
            q_encodings = self.question_tokenizer.encode_batch(questions, add_special_tokens=False)
        except Exception as exc:
            raise ValidationFailedError(f"the question could not be tokenized: {exc}") from exc
        cut = [self._cut_question(q, e) for q, e in zip(questions, q_encodings, strict=True)]
        encodings = self.encode([(q, p.context) for q, p in zip(cut, pairs, strict=True)])
        state = _QAState([p.context for p in pairs], [], [])
        items: list[WorkItem] = []
        for i, enc in enumerate(encodings):
            if 1 not in enc.sequence_ids:  # e.g. only zero-width or control characters
                raise ValidationFailedError(
                    f"inputs[{i}]: the context has no text the model can read (no tokens)"
                )
            windows = [enc, *enc.overflowing]
            state.windows.append(len(windows))
            for w in windows:
                offs = np.asarray(w.offsets, dtype=np.int64).reshape(-1, 2)
                seq = np.array([-1 if s is None else s for s in w.sequence_ids])
                offs[seq != 1] = -1
                state.offsets.append(offs)
                items.append(WorkItem.of(w.ids, w.type_ids))
        return Prepared(items, sum(it.length for it in items), state)

    def split(self, outputs: Outputs, batch: Batch) -> list[Outputs]:
        return token_rows(outputs, batch)

    def _decoded(
        self,
        prepared: Prepared,
        rows: Sequence[RowOutput],
        n_best_size: int = QA_N_BEST,
        max_answer_length: int | None = None,
        allow_null: bool = False,
    ) -> Iterator[tuple[range, qa_decode.QAPrediction]]:
        """Each question's items (its windows) and prediction (answer length None: the bundle's)."""
        state: _QAState = prepared.state
        w = 0
        for context, n in zip(state.contexts, state.windows, strict=True):
            window_rows = rows[w : w + n]
            yield (
                range(w, w + n),
                qa_decode.decode(
                    [r.arrays[QA_START] for r in window_rows],
                    [r.arrays[QA_END] for r in window_rows],
                    state.offsets[w : w + n],
                    context,
                    n_best_size=n_best_size,
                    max_answer_length=(
                        self.max_answer_length if max_answer_length is None else max_answer_length
                    ),
                    allow_null=allow_null,
                ),
            )
            w += n

    def unsure(
        self, prepared: Prepared, rows: Sequence[RowOutput], max_margin: float
    ) -> list[list[int]]:
        """The questions whose answer leads the best span with other text by at most
        `max_margin`, decoded as the export's gate decoded them (the bundle's answer length,
        no null answer): their window items."""
        decoded = self._decoded(prepared, rows)
        return [list(items) for items, pred in decoded if pred.margin <= max_margin]

    def finish(
        self,
        prepared: Prepared,
        rows: Sequence[RowOutput],
        top_k: int,
        max_answer_length: int | None,
        allow_no_answer: bool,
    ) -> list[QAResult]:
        results, n_best = [], max(QA_N_BEST, top_k)
        decoded = self._decoded(prepared, rows, n_best, max_answer_length, allow_no_answer)
        for items, pred in decoded:
            answers = [
                QAAnswer(text=a.text, start=a.start, end=a.end, score=a.probability)
                for a in pred.nbest[:top_k]
            ]
            results.append(
                QAResult(
                    answers=[] if pred.no_answer else answers,
                    no_answer=pred.no_answer,
                    no_answer_score=pred.null_probability if allow_no_answer else None,
                    windows=len(items),
                )
            )
        return results


class FillMask(TaskModel):
    task = "fill-mask"

    def __init__(self, bundle: Bundle) -> None:
        super().__init__(bundle)
        spec = bundle.manifest.fill_mask
        assert spec is not None  # the manifest validator guarantees it for fill-mask
        self.spec = spec
        self.mask_id = spec.mask_token_id
        self.mask_token = bundle.manifest.tokenizer.special_tokens.get("mask", "[MASK]")
        self.max_top_k = spec.top_k if spec.output == "topk" and spec.top_k else 0
        if not self.max_top_k:
            self.max_top_k = min(FILL_MASK_LOGITS_TOP_K, bundle.manifest.tokenizer.vocab_size)

    def prepare(self, texts: Sequence[str], truncate: bool, top_k: int) -> Prepared:
        if top_k > self.max_top_k:
            raise ValidationFailedError(
                f"top_k {top_k} exceeds the {self.max_top_k} candidates model {self.name!r} "
                "gives per mask; ask for fewer",
                details={"max_top_k": self.max_top_k},
            )
        encodings = self.encode(texts)
        self.check_length(encodings, truncate)
        for i, enc in enumerate(encodings):
            if self.mask_id not in enc.ids:
                later = any(self.mask_id in o.ids for o in enc.overflowing)
                where = (
                    f"beyond the model's max length ({self.max_length} tokens)"
                    if later
                    else "missing"
                )
                raise ValidationFailedError(
                    f"input {i} has no {self.mask_token} to fill ({self.mask_token} {where})",
                    details={"index": i, "mask_token": self.mask_token},
                )
        items = self.items_of(encodings)
        return Prepared(items, sum(it.length for it in items), encodings)

    def split(self, outputs: Outputs, batch: Batch) -> list[Outputs]:
        if self.spec.output == "logits":
            rows = []
            for i, at in enumerate(token_positions(batch, self.mask_id)):
                probs = softmax(outputs[LOGITS][i, at])  # (masks, vocab)
                top = np.argsort(-probs, axis=-1, kind="stable")[:, : self.max_top_k]
                scores = np.take_along_axis(probs, top, axis=-1)
                rows.append({"positions": at, "ids": top, "scores": scores})
            return rows
        positions = outputs[POSITIONS]  # (masks, 2): (row, position)
        out = []
        for sel in mask_rows(positions, batch.size):
            out.append(
                {
                    "positions": positions[sel, 1],
                    "ids": outputs[TOP_IDS][sel],
                    "scores": outputs[TOP_SCORES][sel],
                }
            )
        return out

    def finish(
        self, prepared: Prepared, rows: Sequence[RowOutput], texts: Sequence[str], top_k: int
    ) -> list[FillMaskResult]:
        results = []
        for text, enc, row in zip(texts, prepared.state, rows, strict=True):
            a = row.arrays
            masks = []
            for pos, ids, scores in zip(
                a["positions"].tolist(), a["ids"].tolist(), a["scores"].tolist(), strict=True
            ):
                start, end = enc.offsets[pos]
                tokens = [
                    TokenScore(token=self.tokenizer.id_to_token(t) or "", id=t, score=s)
                    for t, s in zip(ids[:top_k], scores[:top_k], strict=True)
                ]
                masks.append(MaskPrediction(start=start, end=end, tokens=tokens))
            sequence = text
            for m in sorted(masks, key=lambda m: m.start, reverse=True):
                best = m.tokens[0].token.removeprefix("##") if m.tokens else ""
                sequence = sequence[: m.start] + best + sequence[m.end :]
            results.append(FillMaskResult(sequence=sequence, masks=masks))
        return results


@dataclass(frozen=True)
class _Word:
    tag: str
    score: float
    start: int
    end: int


def group_entities(words: Sequence[_Word], text: str) -> list[Entity]:
    """IOB2 word tags -> entities (conlleval rules: an I-X that does not continue an X starts
    one). Tags without a B-/I- prefix group consecutive words of the same tag."""
    entities: list[Entity] = []
    current: list[_Word] = []
    kind = ""

    def close() -> None:
        if current:
            start, end = current[0].start, current[-1].end
            score = float(np.mean([w.score for w in current]))
            entities.append(
                Entity(label=kind, text=text[start:end], start=start, end=end, score=score)
            )
            current.clear()

    for w in words:
        prefix, _, name = w.tag.partition("-") if w.tag[:2] in ("B-", "I-") else ("", "", w.tag)
        if w.tag == "O":
            close()
            kind = ""
        elif prefix == "B" or name != kind or not current:
            close()
            kind = name
            current.append(w)
        else:
            current.append(w)
    close()
    return entities


class TokenClassification(TaskModel):
    task = "token-classification"

    def __init__(self, bundle: Bundle) -> None:
        super().__init__(bundle)
        self.labels = bundle.manifest.labels

    def prepare(self, texts: Sequence[str], truncate: bool) -> Prepared:
        encodings = self.encode(texts)
        self.check_length(encodings, truncate)
        items = self.items_of(encodings)
        return Prepared(items, sum(it.length for it in items), encodings)

    def split(self, outputs: Outputs, batch: Batch) -> list[Outputs]:
        return token_rows(outputs, batch)

    def finish(
        self, prepared: Prepared, rows: Sequence[RowOutput], texts: Sequence[str]
    ) -> list[TokenClassifyResult]:
        results = []
        for text, enc, row in zip(texts, prepared.state, rows, strict=True):
            probs = softmax(row.arrays[LOGITS])  # (tokens, labels)
            best = probs.argmax(-1)
            # A word takes the tag of its first sub-token (as training labels it); its span
            # runs to the end of its last sub-token.
            words: dict[int, list[Any]] = {}
            for t, w in enumerate(enc.word_ids):
                if w is None:
                    continue
                start, end = enc.offsets[t]
                if w not in words:
                    j = int(best[t])
                    words[w] = [self.labels[j], float(probs[t, j]), start, end]
                else:
                    words[w][3] = end
            ordered = [_Word(*words[w]) for w in sorted(words)]
            results.append(TokenClassifyResult(entities=group_entities(ordered, text)))
        return results


@dataclass
class _SummaryState:
    texts: list[str]
    spans: list[list[tuple[int, int]]]  # per document, every sentence's (start, end)
    packed: list[extractive.Packed]  # per document, the model input and the sentences read


class ExtractiveSummarization(TaskModel):
    """Sentence scores at each sentence's [CLS] -> the best sentences (trigram blocking), in
    document order, with character offsets into the input."""

    task = "extractive-summarization"

    def __init__(self, bundle: Bundle) -> None:
        super().__init__(bundle)
        plain = Tokenizer.from_str(self.tokenizer.to_str())
        plain.no_truncation()  # sentences are cut by extractive.pack, as in training
        self.sentence_tokenizer = plain
        self.cls_id, self.sep_id = self.special_ids["cls"], self.special_ids["sep"]

    def prepare(self, texts: Sequence[str], truncate: bool) -> Prepared:
        spans = [extractive.sentence_spans(text) for text in texts]
        flat = [text[s:e] for text, doc in zip(texts, spans, strict=True) for s, e in doc]
        try:
            encodings = self.sentence_tokenizer.encode_batch(flat, add_special_tokens=False)
        except Exception as exc:  # the Rust tokenizer raises plain Exceptions
            raise ValidationFailedError(f"the input could not be tokenized: {exc}") from exc
        state = _SummaryState(list(texts), spans, [])
        items: list[WorkItem] = []
        at = 0
        for i, doc in enumerate(spans):
            ids = [e.ids for e in encodings[at : at + len(doc)]]
            at += len(doc)
            packed = extractive.pack(ids, self.max_length, self.cls_id, self.sep_id)
            if not packed.sentences:
                raise ValidationFailedError(
                    f"inputs[{i}] has no sentence the model can read (no tokens)",
                    details={"index": i},
                )
            if packed.truncated and not truncate:
                raise ValidationFailedError(
                    f"input {i} is longer than the model's max length ({self.max_length} "
                    f"tokens: {len(packed.sentences)} of {len(doc) - packed.empty} sentences "
                    "fit); shorten it or send truncate=true",
                    details={
                        "index": i,
                        "max_length": self.max_length,
                        "sentences_read": len(packed.sentences),
                        "sentences_total": len(doc),
                    },
                )
            state.packed.append(packed)
            positions = np.asarray(packed.cls_positions, dtype=np.int64)
            items.append(WorkItem.of(packed.input_ids, packed.token_type_ids, positions))
        return Prepared(items, sum(it.length for it in items), state)

    def split(self, outputs: Outputs, batch: Batch) -> list[Outputs]:
        """Each row's logits at its sentences' [CLS] only: (sentences, 2)."""
        logits = outputs[LOGITS]
        return [{LOGITS: logits[i, item.payload]} for i, item in enumerate(batch.items)]

    def finish(
        self, prepared: Prepared, rows: Sequence[RowOutput], max_sentences: int
    ) -> list[SummarizeResult]:
        state: _SummaryState = prepared.state
        results = []
        for text, doc, packed, row in zip(
            state.texts, state.spans, state.packed, rows, strict=True
        ):
            scores = extractive.sentence_scores(row.arrays[LOGITS])
            read = [doc[k] for k in packed.sentences]
            candidates = [text[s:e] for s, e in read]
            chosen = [
                SummarySentence(
                    index=packed.sentences[j],
                    text=candidates[j],
                    start=read[j][0],
                    end=read[j][1],
                    score=float(scores[j]),
                )
                for j in extractive.select(scores, candidates, max_sentences)
            ]
            results.append(
                SummarizeResult(
                    summary="\n".join(s.text for s in chosen),
                    sentences=chosen,
                    sentences_total=len(doc),
                    sentences_read=len(packed.sentences),
                    truncated=packed.truncated,
                )
            )
        return results


class Translation(TaskModel):
    """Source text -> one work item (``[CLS] x [SEP]``) whose payload is ``(beam size, max new
    tokens)``; the backend (`app.generation.Seq2SeqBackend`) generates the ids, `finish`
    detokenizes them with the target tokenizer exactly as offline evaluation does."""

    task = "translation"

    def __init__(self, bundle: Bundle) -> None:
        super().__init__(bundle)
        gen = bundle.manifest.generation
        assert gen is not None  # the manifest validator guarantees it for translation
        self.generation = gen
        self.target_tokenizer = Tokenizer.from_file(str(bundle.target_tokenizer_file))

    def prepare(
        self,
        texts: Sequence[str],
        beam_size: int | None,
        max_new_tokens: int | None,
        truncate: bool,
    ) -> Prepared:
        gen = self.generation
        beams = gen.num_beams if beam_size is None else beam_size
        if not 1 <= beams <= gen.max_beams:
            raise ValidationFailedError(
                f"beam_size {beams} is out of range for model {self.name!r}: 1..{gen.max_beams}",
                details={"max_beams": gen.max_beams},
            )
        new = gen.max_new_tokens if max_new_tokens is None else max_new_tokens
        if not 1 <= new <= gen.max_new_tokens_limit:
            raise ValidationFailedError(
                f"max_new_tokens {new} is out of range for model {self.name!r}: "
                f"1..{gen.max_new_tokens_limit}",
                details={"max_new_tokens_limit": gen.max_new_tokens_limit},
            )
        encodings = self.encode(texts)
        self.check_length(encodings, truncate)
        items = [WorkItem.of(e.ids, payload=(beams, new)) for e in encodings]
        return Prepared(items, sum(it.length for it in items))

    def warmup_items(self, size: int, length: int) -> list[WorkItem]:
        """Greedy, two tokens: the encoder at this shape and both decoder steps (past 0, 1)."""
        return [WorkItem(it.input_ids, payload=(1, 2)) for it in super().warmup_items(size, length)]

    def finish(self, prepared: Prepared, rows: Sequence[RowOutput]) -> list[TranslateResult]:
        join = self.generation.join_punctuation
        out = []
        for row in rows:
            ids = row.arrays["ids"].tolist()
            text = detokenize(self.target_tokenizer, ids, join)
            out.append(TranslateResult(translation=text, tokens=len(ids)))
        return out


TASK_MODELS: dict[str, type[TaskModel]] = {
    "classification": Classification,
    "qa": QuestionAnswering,
    "fill-mask": FillMask,
    "token-classification": TokenClassification,
    "extractive-summarization": ExtractiveSummarization,
    "translation": Translation,
}


def make_task_model(
    bundle: Bundle, *, doc_stride: int | None = None, max_query_length: int | None = None
) -> Any:
    """The task model for `bundle` (QA takes the window settings; None: the bundle's)."""
    if bundle.task == "qa":
        return QuestionAnswering(bundle, doc_stride, max_query_length)
    return TASK_MODELS[bundle.task](bundle)
