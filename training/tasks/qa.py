"""Extractive question answering: SQuAD v1.1 / v2.0 (and CMRC 2018, which is SQuAD-format).

Reading: the official nested JSON (``data[].paragraphs[].qas[]``, v2's ``is_impossible``) or the
flat Hugging Face records (``answers: {text: [...], answer_start: [...]}``, empty = impossible).
An ``answer_start`` that does not point at the answer text is repaired to the nearest occurrence
of the text in the context; an answer whose text is not in the context at all is dropped from
the training labels and counted (CMRC 2018 dev has 193 such answers). Its text still counts as a
gold answer for EM/F1, as in the official evaluation scripts, which never look at offsets.

Windows: question first, context second, ``truncation="only_second"``; the question is cut to
``max_query_length`` tokens first, and consecutive windows share ``doc_stride`` context tokens
(the tokenizer's ``stride``, as in Hugging Face's ``run_qa.py``; Google's ``run_squad.py`` used
the same name for the step between windows instead).

Metrics: EM/F1 as the official SQuAD scripts (v1.1; v2.0 adds HasAns/NoAns splits and the best
null threshold). For Chinese (``language="zh"``, or with ``auto`` a data set most of whose contexts
hold CJK characters) the same functions run with the CMRC 2018 strategy of
``cmrc2018_evaluate.py``: lower-cased, punctuation (Chinese and ASCII) removed, one token per CJK
character and one per run of Latin letters/digits, F1 from the longest common substring of the
tokens. It differs from the script only at the edges: the script removes a fixed list of 33
symbols (``-:_*^/+=`` and the like, ``，。：？！《》、（）`` and the like) where this also removes
every other punctuation character (``.,()"‘`` ...), it keeps spaces inside an answer for EM (this
removes them), and it splits Latin runs with nltk's word tokenizer (tokens such as ``(`` count in
its F1). Scoring CMRC 2018 dev with a second annotator's answer and with gold spans of jittered
boundaries as predictions (nltk replaced by a whitespace split), the two agree to 0.02 points.

Span decoding is :mod:`bundle.qa`, shared with the server.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from bundle.manifest import QA_DEFAULTS
from bundle.qa import QAPrediction, decode_batch
from training import config as cfg
from training.errors import DataError, UsageError
from training.tasks import Features, LabelVocab, hf_source
from training.tasks.base import Part, Task
from training.tasks.qa_metrics import (
    CHINESE,
    ENGLISH,
    AnswerMetricStrategy,
    best_threshold,
    compute_metrics,
    data_language,
    exact_match,
    f1_score,
    gold_answers,
    is_v2,
    normalize_answer,
    normalize_answer_zh,
    strategy_for,
    tokens_zh,
)

log = logging.getLogger(__name__)

TASK = "qa"
HEAD = "BertForQuestionAnswering"

Tokenizer = Any  # a fast (Rust-backed) transformers tokenizer

# The fixed article split of SQuAD v1.1 dev used for every reported figure (train-v1.1.json is
# not available): the first 38 articles train, the last 10 evaluate. Identical to
# squad_v1.1/split_by_article.json of the shared data, kept here so no run needs that folder.
SQUAD_V1_DEV_SPLIT: dict[str, tuple[str, ...]] = {
    "train_titles": (
        "Super_Bowl_50", "Warsaw", "Normans", "Nikola_Tesla", "Computational_complexity_theory",
        "Teacher", "Martin_Luther", "Southern_California", "Sky_(United_Kingdom)",
        "Victoria_(Australia)", "Huguenot", "Steam_engine", "Oxygen", "1973_oil_crisis",
        "Apollo_program", "European_Union_law", "Amazon_rainforest", "Ctenophora",
        "Fresno,_California", "Packet_switching", "Black_Death", "Geology",
        "Newcastle_upon_Tyne", "Victoria_and_Albert_Museum", "American_Broadcasting_Company",
        "Genghis_Khan", "Pharmacy", "Immune_system", "Civil_disobedience", "Construction",
        "Private_school", "Harvard_University", "Jacksonville,_Florida", "Economic_inequality",
        "Doctor_Who", "University_of_Chicago", "Yuan_dynasty", "Kenya",
    ),
    "eval_titles": (
        "Intergovernmental_Panel_on_Climate_Change", "Chloroplast", "Prime_number", "Rhine",
        "Scottish_Parliament", "Islamism", "Imperialism", "United_Methodist_Church",
        "French_and_Indian_War", "Force",
    ),
}  # fmt: skip


@dataclass
class Config:
    max_seq_len: int = cfg.field(384, help="tokens per window: [CLS] question [SEP] context [SEP]")
    doc_stride: int = cfg.field(
        QA_DEFAULTS.doc_stride, help="context tokens shared by consecutive windows"
    )
    max_query_length: int = cfg.field(
        QA_DEFAULTS.max_query_length, help="questions are cut to this many tokens"
    )
    n_best_size: int = cfg.field(20, help="candidate answers kept per question")
    max_answer_length: int = cfg.field(
        QA_DEFAULTS.max_answer_length, help="longest answer, in tokens"
    )
    version_2_with_negative: bool | None = cfg.field(
        None, help="SQuAD v2: questions may have no answer (default: as the data file says)"
    )
    null_score_diff_threshold: float = cfg.field(
        0.0, help="v2: answer nothing when null score - best span score exceeds this"
    )
    language: Literal["auto", "en", "zh"] = cfg.field(
        "auto",
        help="EM/F1 tokenisation: en (SQuAD), zh (CMRC 2018), auto (zh when most contexts of the "
        "evaluation data hold CJK characters)",
    )
    article_split: str = cfg.field(
        "",
        help="train on some articles and evaluate on others of one file: 'squad-v1.1-dev' (the "
        "fixed 38/10 split of SQuAD v1.1 dev) or a JSON file of train_titles/eval_titles",
    )


@dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character offset in the context; context[start:start+len(text)] == text


@dataclass
class Example:
    """One question. ``answers``: those located in the context (training labels, first one
    used); ``gold_texts``: every original answer text (for EM/F1); ``v2``: from a v2 dataset."""

    id: str
    question: str
    context: str
    answers: list[Answer]
    gold_texts: list[str]
    is_impossible: bool = False
    title: str = ""
    v2: bool = False


@dataclass
class ReadStats:
    articles: int = 0
    examples: int = 0
    impossible: int = 0
    answers: int = 0
    answers_realigned: int = 0  # answer_start fixed to the nearest occurrence of the text
    answers_unlocated: int = 0  # text not in the context: dropped from the labels
    examples_unlocated: int = 0  # answerable questions left with no located answer
    unlocated_ids: list[str] = field(default_factory=list)


# --- reading ----------------------------------------------------------------------------------


def read_articles(path: str | Path) -> tuple[list[dict[str, Any]], bool]:
    """(articles in the nested SQuAD layout, is v2) of a SQuAD-format JSON file.

    Flat Hugging Face records are grouped into articles by title and paragraphs by context;
    ``path`` may also be a datasets source (:mod:`training.tasks.hf_source`).
    """
    if hf_source.is_source(path):
        rows = hf_source.load_records(path)
        if not all({"question", "context", "answers"} <= set(r) for r in rows[:1]):
            raise DataError(f"{path}: rows need question, context and answers; got {list(rows[0])}")
        return _group_flat(rows), any(not r["answers"]["text"] for r in rows)
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {p} does not exist")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{p} is not valid JSON: {exc}") from exc
    data = doc.get("data") if isinstance(doc, dict) else doc
    if not isinstance(data, list) or not data:
        raise DataError(f"{p}: expected SQuAD JSON with a non-empty 'data' list")
    version = str(doc.get("version", "")) if isinstance(doc, dict) else ""
    if all(isinstance(a, dict) and "paragraphs" in a for a in data):
        v2 = version.lstrip("v").startswith("2") or any(
            "is_impossible" in q for a in data for par in a["paragraphs"] for q in par["qas"]
        )
        return data, v2
    if all(isinstance(r, dict) and {"question", "context", "answers"} <= set(r) for r in data):
        return _group_flat(data), version.lstrip("v").startswith("2") or any(
            not r["answers"]["text"] for r in data
        )
    raise DataError(
        f"{p}: records are neither SQuAD articles (with 'paragraphs') nor flat "
        "question/context/answers records"
    )


def _group_flat(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    articles: dict[str, dict[str, Any]] = {}
    paragraphs: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        title = str(r.get("title", ""))
        art = articles.setdefault(title, {"title": title, "paragraphs": []})
        key = (title, r["context"])
        if key not in paragraphs:
            paragraphs[key] = {"context": r["context"], "qas": []}
            art["paragraphs"].append(paragraphs[key])
        texts, starts = r["answers"]["text"], r["answers"]["answer_start"]
        paragraphs[key]["qas"].append(
            {
                "id": str(r.get("id", len(paragraphs[key]["qas"]))),
                "question": r["question"],
                "answers": [
                    {"text": t, "answer_start": s} for t, s in zip(texts, starts, strict=True)
                ],
                "is_impossible": not texts,
            }
        )
    return list(articles.values())


def locate_answer(context: str, text: str, start: int) -> int | None:
    """Character start of ``text`` in ``context``: ``start`` when it matches, else the nearest
    occurrence (ties: the earlier), else None."""
    if not text:
        return None
    if start >= 0 and context[start : start + len(text)] == text:
        return start
    hits = [m.start() for m in re.finditer(re.escape(text), context)]
    if not hits:
        return None
    return min(hits, key=lambda h: (abs(h - start), h))


def load_examples(
    source: str | Path | Sequence[dict[str, Any]],
    config: Config | None = None,
    *,
    labels: None = None,
    titles: Collection[str] | None = None,
    part: Literal["train", "eval"] | None = None,
    stats: ReadStats | None = None,
) -> list[Example]:
    """Questions of a SQuAD-format file (or of already-read articles), in file order.

    Args:
        source: path of a SQuAD/CMRC JSON file, or its ``data`` list of articles.
        config: ``version_2_with_negative`` overrides what the file says.
        labels: unused (no label vocabulary in QA); accepted for the common task surface.
        titles: keep only the articles with these titles (see :func:`split_by_article`).
        part: with ``config.article_split``, keep that part's articles of the split.
        stats: filled with the counts of :class:`ReadStats` (repaired and dropped answers).
    """
    del labels
    config = config or Config()
    if isinstance(source, str | Path):
        articles, v2 = read_articles(source)
        where = str(source)
    else:
        articles = list(source)
        v2 = any("is_impossible" in q for a in articles for p in a["paragraphs"] for q in p["qas"])
        where = "articles"
    if config.version_2_with_negative is not None:
        v2 = config.version_2_with_negative
    if config.article_split and part is not None:
        split = split_titles(config.article_split)
        chosen = set(split[f"{part}_titles"])
        missing = sorted(chosen - {a.get("title") for a in articles})
        if missing:
            names = ", ".join(missing)
            raise DataError(f"{where}: split names article(s) not in the data: {names}")
        titles = chosen if titles is None else chosen & set(titles)
    st = stats if stats is not None else ReadStats()
    out: list[Example] = []
    for article in articles:
        if titles is not None and article.get("title") not in titles:
            continue
        st.articles += 1
        for par in article["paragraphs"]:
            context = par["context"]
            for qa in par["qas"]:
                impossible = bool(qa.get("is_impossible", False))
                located: list[Answer] = []
                golds: list[str] = []
                for ans in [] if impossible else qa.get("answers", []):
                    text = ans["text"]
                    golds.append(text)
                    st.answers += 1
                    start = locate_answer(context, text, int(ans.get("answer_start", -1)))
                    if start is None:
                        st.answers_unlocated += 1
                        continue
                    if start != ans.get("answer_start"):
                        st.answers_realigned += 1
                    located.append(Answer(text, start))
                # SQuAD questions carry ids; a file without them gets stable positional ones
                qid = str(qa.get("id", f"q{st.examples}"))
                if not impossible and not located:
                    st.examples_unlocated += 1
                    st.unlocated_ids.append(qid)
                st.impossible += impossible
                st.examples += 1
                out.append(
                    Example(
                        id=qid,
                        question=qa["question"],
                        context=context,
                        answers=located,
                        gold_texts=golds,
                        is_impossible=impossible,
                        title=str(article.get("title", "")),
                        v2=v2,
                    )
                )
    if st.answers_unlocated or st.answers_realigned:
        log.warning(
            "%s: %d answer(s) had an answer_start not matching the context: %d moved to the "
            "nearest occurrence of their text, %d not found in the context and dropped from the "
            "labels (%d question(s) left without a located answer)",
            where,
            st.answers_realigned + st.answers_unlocated,
            st.answers_realigned,
            st.answers_unlocated,
            st.examples_unlocated,
        )
    if not out:
        raise DataError(f"{where}: no questions" + (" in the chosen articles" if titles else ""))
    return out


BUILTIN_SPLITS = {"squad-v1.1-dev": SQUAD_V1_DEV_SPLIT}


def split_titles(split_file: str | Path | None = None) -> Mapping[str, Sequence[str]]:
    """``{"train_titles": [...], "eval_titles": [...]}`` of a built-in split name or a JSON file.

    ``None`` is the built-in SQuAD v1.1 dev split (:data:`SQUAD_V1_DEV_SPLIT`). No title may be
    in both lists.
    """
    if split_file is None or str(split_file) in BUILTIN_SPLITS:
        split: Mapping[str, Sequence[str]] = BUILTIN_SPLITS[str(split_file or "squad-v1.1-dev")]
    else:
        try:
            split = json.loads(Path(split_file).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(
                f"split {split_file} is neither a built-in split ({', '.join(BUILTIN_SPLITS)}) "
                f"nor a readable JSON file: {exc}"
            ) from exc
        if not all(isinstance(split.get(k), list) for k in ("train_titles", "eval_titles")):
            raise UsageError(f"split file {split_file} needs lists 'train_titles', 'eval_titles'")
    both = sorted(set(split["train_titles"]) & set(split["eval_titles"]))
    if both:
        raise DataError(f"article(s) in both train and eval lists: {', '.join(both)}")
    return split


def split_by_article(
    articles: Sequence[dict[str, Any]], split_file: str | Path | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train articles, eval articles) of SQuAD v1.1 dev by a fixed list of titles.

    ``split_file``: see :func:`split_titles`. Every listed title must exist.
    """
    split = split_titles(split_file)
    train, evaluate = list(split["train_titles"]), list(split["eval_titles"])
    by_title = {a.get("title"): a for a in articles}
    missing = [t for t in train + evaluate if t not in by_title]
    if missing:
        raise DataError(f"split names article(s) not in the data: {', '.join(missing)}")
    return [by_title[t] for t in train], [by_title[t] for t in evaluate]


# --- features ---------------------------------------------------------------------------------


def _cut_questions(
    questions: list[str], tokenizer: Tokenizer, max_query_length: int
) -> tuple[list[str], int]:
    """Questions cut (at a token boundary, in characters) to ``max_query_length`` tokens."""
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out, cut = [], 0
    for q, offs in zip(questions, enc["offset_mapping"], strict=True):
        if len(offs) > max_query_length:
            q = q[: offs[max_query_length - 1][1]]
            cut += 1
        out.append(q)
    return out, cut


def features(
    examples: Sequence[Example],
    tokenizer: Tokenizer,
    config: Config,
    labels: None = None,
    *,
    training: bool = False,
    chunk_size: int = 512,
) -> Features:
    """Overlapping windows of every example.

    Columns per window: ``input_ids``, ``token_type_ids``, ``attention_mask`` (unpadded,
    ``<= max_seq_len``), ``start_positions``/``end_positions`` (token indices of the first located
    answer when it lies wholly inside the window, else 0 = [CLS]), ``example_index`` (index into
    ``examples``) and ``offset_mapping``: an int32 array ``(tokens, 2)`` of character offsets into
    the context, -1 for question/special tokens (what :func:`bundle.qa.decode` expects).

    ``labels`` is unused (the common task surface has it). ``training=True`` leaves out
    answerable questions whose answer could not be located. ``stats``:
    ``examples``, ``windows``, ``questions_cut``, ``skipped_unlocated``, ``answer_in_no_window``
    (a located answer that no window holds whole, e.g. longer than a window).
    """
    del labels
    room = config.max_seq_len - config.max_query_length - 3  # [CLS] q [SEP] c [SEP]
    if room <= 0:
        raise UsageError("--max-seq-len must exceed --max-query-length + 3")
    if not 0 <= config.doc_stride < room:
        raise UsageError(
            f"--doc-stride {config.doc_stride} must be below the context room of a window "
            f"({room} = max_seq_len - max_query_length - 3)"
        )
    keep = [
        i
        for i, ex in enumerate(examples)
        if not (training and not ex.is_impossible and not ex.answers)
    ]
    columns: dict[str, list[Any]] = {
        k: []
        for k in (
            "input_ids",
            "token_type_ids",
            "attention_mask",
            "start_positions",
            "end_positions",
            "example_index",
            "offset_mapping",
        )
    }
    stats = {
        "examples": len(keep),
        "windows": 0,
        "questions_cut": 0,
        "skipped_unlocated": len(examples) - len(keep),
        "answer_in_no_window": 0,
    }
    for lo in range(0, len(keep), chunk_size):
        idx = keep[lo : lo + chunk_size]
        questions, n_cut = _cut_questions(
            # Leading whitespace would only waste question tokens (some SQuAD questions have it).
            [examples[i].question.lstrip() for i in idx],
            tokenizer,
            config.max_query_length,
        )
        stats["questions_cut"] += n_cut
        enc = tokenizer(
            questions,
            [examples[i].context for i in idx],
            truncation="only_second",
            max_length=config.max_seq_len,
            stride=config.doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        answered: set[int] = set()
        for w, local in enumerate(enc["overflow_to_sample_mapping"]):
            ex_i = idx[local]
            ex = examples[ex_i]
            seq = np.array([-1 if s is None else s for s in enc.sequence_ids(w)])
            offs = np.asarray(enc["offset_mapping"][w], dtype=np.int32).reshape(-1, 2)
            offs[seq != 1] = -1
            start_pos = end_pos = 0
            if ex.answers and not ex.is_impossible:
                start_pos, end_pos = _token_span(offs, ex.answers[0])
                if start_pos:
                    answered.add(ex_i)
            for k in ("input_ids", "token_type_ids", "attention_mask"):
                columns[k].append(enc[k][w])
            columns["start_positions"].append(start_pos)
            columns["end_positions"].append(end_pos)
            columns["example_index"].append(ex_i)
            columns["offset_mapping"].append(offs)
        stats["windows"] += len(enc["input_ids"])
        stats["answer_in_no_window"] += sum(
            1
            for i in idx
            if examples[i].answers and not examples[i].is_impossible and i not in answered
        )
    keys = ("input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions")
    v2 = is_v2(examples, config)
    return Features(columns, keys, stats=stats, meta={"v2": v2})


def _token_span(offs: np.ndarray, answer: Answer) -> tuple[int, int]:
    """(start token, end token) of ``answer`` in a window with ``offs`` ``(tokens, 2)`` (-1 off
    the context), or (0, 0) when the window does not hold the whole answer."""
    ctx = np.flatnonzero(offs[:, 0] >= 0)
    if len(ctx) == 0:
        return 0, 0
    s_char, e_char = answer.start, answer.start + len(answer.text)
    if offs[ctx[0], 0] > s_char or offs[ctx[-1], 1] < e_char:
        return 0, 0
    starts, ends = offs[ctx, 0], offs[ctx, 1]
    # Last token starting at or before the answer start; first token ending at or after its end.
    s_tok = ctx[max(int(np.searchsorted(starts, s_char, side="right")) - 1, 0)]
    e_tok = ctx[min(int(np.searchsorted(ends, e_char, side="left")), len(ctx) - 1)]
    return int(s_tok), int(max(e_tok, s_tok))


def build_labels(examples: Sequence[Example], config: Config | None = None) -> None:
    """Extractive QA has no label vocabulary (labels are token positions): always None."""
    del examples, config


def model_kwargs(labels: None = None) -> dict[str, Any]:
    """``BertForQuestionAnswering`` needs nothing beyond the checkpoint (2 logits per token)."""
    del labels
    return {}


def postprocess(
    outputs: tuple[ArrayLike, ArrayLike] | Sequence[Any],
    features: Features,
    examples: Sequence[Example],
    config: Config,
) -> dict[str, QAPrediction]:
    """Span decoding of every example (see :func:`bundle.qa.decode_batch`).

    Args:
        outputs: ``(start_logits, end_logits)``, each ``(windows, tokens)`` in feature order
            (or ragged rows, one per window).
        features: the windows :func:`features` made from ``examples``.
    Returns ``{example id: QAPrediction}`` for the examples that have windows.
    """
    start_logits, end_logits = outputs[0], outputs[1]
    preds = decode_batch(
        start_logits,
        end_logits,
        features.column("offset_mapping"),
        features.column("example_index"),
        [ex.context for ex in examples],
        n_best_size=config.n_best_size,
        max_answer_length=config.max_answer_length,
        allow_null=bool(features.meta.get("v2", is_v2(examples, config))),
        null_threshold=config.null_score_diff_threshold,
    )
    with_windows = set(features.column("example_index"))
    return {examples[i].id: p for i, p in enumerate(preds) if i in with_windows}


# --- output files -----------------------------------------------------------------------------


def write_predictions(predictions: Mapping[str, QAPrediction], out_dir: str | Path) -> list[Path]:
    """Write the official-format files: ``predictions.json`` (id -> answer text, "" = none),
    ``nbest_predictions.json`` (id -> [{text, probability, start_logit, end_logit}], the null
    answer included under v2) and, under v2, ``null_odds.json`` (id -> null - best span score,
    the ``--na-prob-file`` of the official v2 script)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    answers = {qid: p.text for qid, p in predictions.items()}
    nbest: dict[str, list[dict[str, Any]]] = {}
    odds: dict[str, float] = {}
    for qid, p in predictions.items():
        entries: list[dict[str, Any]] = [
            {
                "text": a.text,
                "probability": a.probability,
                "start_logit": a.start_logit,
                "end_logit": a.end_logit,
            }
            for a in p.nbest
        ]
        if p.null_score is not None and p.null_logits is not None:
            entries.append(
                {
                    "text": "",
                    "probability": p.null_probability,
                    "start_logit": p.null_logits[0],
                    "end_logit": p.null_logits[1],
                }
            )
            entries.sort(key=lambda e: -(e["start_logit"] + e["end_logit"]))
            diff = p.score_diff
            odds[qid] = diff if diff is not None and np.isfinite(diff) else 1e9
        nbest[qid] = entries
    files = [out / "predictions.json", out / "nbest_predictions.json"]

    def dump(path: Path, obj: Any) -> None:
        path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    dump(files[0], answers)
    dump(files[1], nbest)
    if odds:
        files.append(out / "null_odds.json")
        dump(files[2], odds)
    return files


# --- the task interface -----------------------------------------------------------------------


class QATask(Task[Config, Example, dict[str, QAPrediction]]):
    """Extractive QA: answer spans from start/end logits over question + context windows."""

    name = TASK
    head = HEAD
    best_metric = "eval_f1"
    config_class = Config

    def new_read_stats(self) -> ReadStats:
        return ReadStats()

    def load_examples(
        self, path: str, conf: Config, *, labels: LabelVocab | None, part: Part, stats: Any
    ) -> list[Example]:
        del labels  # QA has no label vocabulary
        return load_examples(path, conf, part=part, stats=stats)

    def build_labels(self, examples: Sequence[Example], conf: Config) -> None:
        return build_labels(examples, conf)

    def features(
        self,
        examples: Sequence[Example],
        tokenizer: Tokenizer,
        conf: Config,
        labels: LabelVocab | None,
        *,
        training: bool = False,
    ) -> Features:
        del labels
        return features(examples, tokenizer, conf, training=training)

    def model_kwargs(self, labels: LabelVocab | None) -> dict[str, Any]:
        del labels
        return model_kwargs()

    def postprocess(
        self, outputs: Any, feats: Features, examples: Sequence[Example], conf: Config
    ) -> dict[str, QAPrediction]:
        return postprocess(outputs, feats, examples, conf)

    def compute_metrics(
        self, predictions: dict[str, QAPrediction], examples: Sequence[Example], conf: Config
    ) -> dict[str, float]:
        return compute_metrics(predictions, examples, conf)

    def write_predictions(self, predictions: dict[str, QAPrediction], folder: Path) -> list[Path]:
        return write_predictions(predictions, folder)


SPEC = QATask()

__all__ = [
    "CHINESE",
    "ENGLISH",
    "HEAD",
    "SPEC",
    "SQUAD_V1_DEV_SPLIT",
    "TASK",
    "Answer",
    "AnswerMetricStrategy",
    "Config",
    "Example",
    "ReadStats",
    "best_threshold",
    "build_labels",
    "compute_metrics",
    "data_language",
    "exact_match",
    "f1_score",
    "features",
    "gold_answers",
    "load_examples",
    "locate_answer",
    "model_kwargs",
    "normalize_answer",
    "normalize_answer_zh",
    "postprocess",
    "read_articles",
    "split_by_article",
    "split_titles",
    "strategy_for",
    "tokens_zh",
    "write_predictions",
]
