"""The model bundle: the one contract between training (writes it) and serving (reads it).

A bundle is a folder::

    models/<name>/
        manifest.json          what follows, schema-versioned (this module's ``Manifest``)
        tokenizer.json         a ``tokenizers`` file: serving needs neither transformers nor torch
        tokenizer_config.json  special tokens and lower-casing, as transformers saved them
        model.fp32.onnx        graph-optimised fp32 (fused attention, LayerNorm, GELU)
        model.int8.onnx        dynamically quantised for the CPU provider
        model.fp16.onnx        for the CUDA provider

A translation bundle holds two graphs per variant instead, ``encoder.<variant>.onnx`` and
``decoder.<variant>.onnx`` (``VariantSpec.file`` and ``VariantSpec.decoder``; see
``app/generation.py`` and :mod:`bundle.decoding`), a ``generation`` section, and
``target_tokenizer.json`` when the target side has its own vocabulary.

Every file is listed in the manifest with its size and sha256, and :func:`load_bundle` refuses a
bundle whose files are missing or do not match. This module imports pydantic and the standard
library only (no numpy, no onnxruntime, no torch), so both sides can use it: ``training.export``
builds a :class:`Manifest`, calls :func:`write_manifest` and reads the bundle back with
:func:`load_bundle`, as the app loads it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SCHEMA_VERSION: Literal[1] = 1
MANIFEST_FILE = "manifest.json"

Task = Literal[
    "classification",
    "qa",
    "fill-mask",
    "token-classification",
    "extractive-summarization",
    "translation",
]
TASKS: tuple[Task, ...] = get_args(Task)
VariantName = Literal["fp32", "int8", "fp16"]
Provider = Literal["CPUExecutionProvider", "CUDAExecutionProvider"]
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# translation: the encoder graph takes no segments; the decoder graph is described separately
ENCODER_INPUT_NAMES = ("input_ids", "attention_mask")

# Which variant a provider prefers, best first; only variants whose parity gate passed are picked
# automatically (an fp16 graph exported on a machine without a GPU was never checked). On a CPU
# int8 is preferred only where it has int8 dot-product instructions (`fast_int8_cpu`): without
# them onnxruntime's int8 kernels run at about fp32's speed (measured on an AVX2-only EPYC:
# served MiniLM fp32 85.2 vs int8 72.4 req/s), so fp32 serves more and answers exactly.
PREFERENCE: dict[str, tuple[VariantName, ...]] = {
    "CUDAExecutionProvider": ("fp16", "fp32"),
    "CPUExecutionProvider": ("int8", "fp32"),
}
SLOW_INT8_CPU_PREFERENCE: tuple[VariantName, ...] = ("fp32", "int8")
# /proc/cpuinfo flags of int8 dot products: x86 VNNI (AVX-512 or AVX) and AMX; Arm dotprod/i8mm.
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})


@functools.cache
def fast_int8_cpu(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has int8 dot-product instructions (True where it cannot be told)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True
    flags = {
        flag
        for line in text.splitlines()
        if line.startswith(("flags", "Features"))
        for flag in line.partition(":")[2].split()
    }
    return not flags or bool(flags & INT8_DOT_FLAGS)


class BundleError(Exception):
    """A bundle that cannot be used; the message is one line that names the folder and the fix."""


class _Strict(BaseModel):
    # Unknown keys are errors: a typo in a hand-edited manifest must not pass silently.
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Strict):
    """A file of the bundle, relative to its folder."""

    path: str
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class TensorSpec(_Strict):
    """A graph input or output; a string in ``shape`` names a dynamic axis."""

    name: str
    dtype: Literal["int64", "float32", "float16"]
    shape: list[int | str]


class TokenizerSpec(_Strict):
    """How text becomes ``input_ids``: what a server must reproduce exactly."""

    file: str = "tokenizer.json"
    config_file: str | None = "tokenizer_config.json"
    lowercase: bool
    strip_accents: bool | None = None  # None: follows lowercase, as BERT's BasicTokenizer
    vocab_size: int = Field(gt=0)
    special_tokens: dict[str, str]  # role ("cls", "sep", "pad", "unk", "mask") -> token
    special_token_ids: dict[str, int]  # role -> id
    max_length: int = Field(gt=0)
    # Pairs (question, context) truncate the context only; single texts truncate at the end.
    truncation: Literal["longest_first", "only_first", "only_second"]
    text_pair: bool  # True: the task takes (text, text_pair), e.g. (question, context)
    # The fused Attention op takes the sequence length from the attention mask, which assumes
    # every pad token comes after the real ones.
    padding_side: Literal["right"] = "right"


class FillMaskSpec(_Strict):
    """Fill-mask output form: in-graph top-k at the [MASK] positions, or full vocabulary logits.

    ``topk`` outputs: ``mask_positions`` (masks, 2) int64 rows of (batch index, position),
    ``top_ids`` (masks, k) int64 and ``top_scores`` (masks, k) float32 softmax probabilities,
    best first. ``logits`` outputs ``logits`` (batch, sequence, vocab).
    """

    output: Literal["topk", "logits"]
    top_k: int | None = Field(default=None, gt=0)
    mask_token_id: int

    @model_validator(mode="after")
    def _k_for_topk(self) -> FillMaskSpec:
        if self.output == "topk" and self.top_k is None:
            raise ValueError("fill_mask.top_k is required when output is 'topk'")
        return self


class QASpec(_Strict):
    """How an extractive-QA model reads a long context, as it was fine-tuned (its run's
    ``--doc-stride``, ``--max-query-length``, ``--max-answer-length``): the service's defaults
    for the bundle (:func:`bundle.qa.window_sizes` caps the first two to the model's length).
    Bundles written before this field serve with :data:`QA_DEFAULTS`."""

    doc_stride: int = Field(ge=0)
    max_query_length: int = Field(ge=1)
    max_answer_length: int = Field(ge=1)


QA_DEFAULTS = QASpec(doc_stride=128, max_query_length=64, max_answer_length=30)  # run_squad's

# The graph outputs of each kind of encoder head, in order: what export names and the service
# reads (one output, ``logits``, for classification, token classification, extractive
# summarisation and fill-mask with ``output: logits``).
LOGITS = "logits"
QA_OUTPUTS = ("start_logits", "end_logits")
TOPK_OUTPUTS = ("mask_positions", "top_ids", "top_scores")


def output_names(task: str, fill_mask_output: str | None = None) -> tuple[str, ...]:
    """The output names of an encoder task's graph (``fill_mask_output``: topk or logits)."""
    if task == "qa":
        return QA_OUTPUTS
    if task == "fill-mask" and fill_mask_output == "topk":
        return TOPK_OUTPUTS
    return (LOGITS,)


class ParityReport(_Strict):
    """How closely a variant reproduces the PyTorch model on the held-out slice.

    ``max_abs_diff`` compares the main output (logits; probabilities at the top-k ids for
    fill-mask top-k) over real tokens only. ``agreement`` is the share of examples (tokens, for
    token-classification; masks for fill-mask) whose top label equals PyTorch's; for qa scored
    on an evaluation file, the share of questions whose decoded answer (the served one) does.
    ``metric``/``reference_metric`` are the task metric of this variant and of PyTorch, in percent,
    against gold labels where the data had them; ``metric_gap`` is their difference on the same
    examples (reference minus variant, points). ``*_ci``: 95 % intervals (agreement: Wilson over
    examples; gap: paired, by example; translation BLEU: paired bootstrap over sentences).
    ``batch_*`` compare batched with one-by-one runs.
    """

    status: Literal["passed", "failed", "not_checked"]
    provider: str | None = None
    examples: int = Field(ge=0)
    data: str  # where the held-out slice came from: a file name, or "generated"
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    agreement: float | None = None
    agreement_ci: list[float] | None = None
    metric_name: str | None = None
    metric: float | None = None
    reference_metric: float | None = None
    metric_gap: float | None = None
    metric_gap_ci: list[float] | None = None
    batch_max_abs_diff: float | None = None
    batch_agreement: float | None = None
    thresholds: dict[str, float]
    failures: list[str] = []
    note: str | None = None


class GraphSpec(_Strict):
    """A second graph of a variant (translation: the decoder step with its key/value cache)."""

    file: str
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def file_entry(self) -> FileEntry:
        return FileEntry(path=self.file, size_bytes=self.size_bytes, sha256=self.sha256)


class GenerationSpec(_Strict):
    """How a translation bundle generates (bundle/decoding.py): ids of the decoder's start, stop
    and pad tokens, defaults and limits of a request, and the cache's shape."""

    decoder_start_token_id: int
    eos_token_id: int
    pad_token_id: int
    max_new_tokens: int = Field(gt=0, description="default per request")
    max_new_tokens_limit: int = Field(gt=0, description="the decoder's positions allow no more")
    num_beams: int = Field(ge=1, description="default beam size (1: greedy)")
    max_beams: int = Field(ge=1)
    length_penalty: float = 1.0
    early_stopping: Literal[False] = False
    join_punctuation: bool = True
    num_layers: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)


class RerunSpec(_Strict):
    """A cascade (qa int8): a question whose answer leads the best span with other text by at
    most ``max_margin`` (start + end logits, :attr:`bundle.qa.QAPrediction.margin`: a near-tie,
    where int8's rounding may have picked the other) is answered again by the ``variant`` graph.

    The export picks ``max_margin`` on the gate's held-out questions: the smallest threshold
    that brings agreement to its target on one half, applied to the other half and the other
    way round; the variant's parity figures are those of that cross-fitted cascade, and
    ``max_margin`` is the larger of the two thresholds. With it, on the same held-out questions:
    ``share`` of them rerun, ``agreement`` with PyTorch's answers and the task ``metric`` (what
    the service answers there; in-sample, so above the parity figures' honest estimate).
    ``alone_agreement``: the graph's agreement without reruns.
    """

    variant: VariantName
    max_margin: float = Field(ge=0, allow_inf_nan=False)
    share: float = Field(ge=0, le=1)
    agreement: float | None = None
    metric: float | None = None
    alone_agreement: float | None = None


class VariantSpec(_Strict):
    """One ONNX graph of the bundle (translation: the encoder, and ``decoder``); ``rerun``: the
    variant that answers again where this one is unsure (qa int8; the service loads both)."""

    file: str
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    precision: VariantName
    provider: Provider  # the execution provider this variant is meant for
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    fused_ops: dict[str, int] = {}  # e.g. {"Attention": 12, "SkipLayerNormalization": 24}
    quantization: dict[str, str | bool | int] | None = None
    parity: ParityReport
    decoder: GraphSpec | None = None  # translation only
    rerun: RerunSpec | None = None  # qa only

    def file_entry(self) -> FileEntry:
        return FileEntry(path=self.file, size_bytes=self.size_bytes, sha256=self.sha256)

    def file_entries(self) -> list[FileEntry]:
        """The variant's graph files (one, or encoder and decoder for translation)."""
        extra = [self.decoder.file_entry()] if self.decoder is not None else []
        return [self.file_entry(), *extra]


class SourceInfo(_Strict):
    checkpoint: str
    architecture: str
    model_type: str = "bert"
    hidden_size: int
    num_layers: int
    num_heads: int
    config_sha256: str | None = None


class Manifest(_Strict):
    """``manifest.json``; ``schema_version`` changes whenever a reader would misread a bundle."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(min_length=1)
    task: Task
    # index = output position; empty for qa, fill-mask and extractive-summarization (whose two
    # outputs at each sentence's [CLS] are fixed: other, summary)
    labels: list[str] = []
    multi_label: bool = False  # classification: sigmoid per label instead of softmax
    max_seq_length: int = Field(gt=0)
    tokenizer: TokenizerSpec
    fill_mask: FillMaskSpec | None = None
    qa: QASpec | None = None  # qa only; None (bundles before 2026-12-06): QA_DEFAULTS
    # translation: the target side's tokenizer when it differs from the source's (else None),
    # and the generation settings
    target_tokenizer: TokenizerSpec | None = None
    generation: GenerationSpec | None = None
    variants: dict[VariantName, VariantSpec]
    # variants the export made and left out because they missed their parity gate, and why
    gate_misses: dict[VariantName, ParityReport] = {}
    default_variant: VariantName
    files: list[FileEntry]  # tokenizer and other non-graph files
    evaluation: dict[str, float | int | str | None] = {}  # carried over from the checkpoint
    source: SourceInfo
    versions: dict[str, str]  # package -> version used to export
    created_at: datetime

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if not self.variants:
            raise ValueError("a bundle needs at least one variant")
        if self.default_variant not in self.variants:
            raise ValueError(f"default_variant {self.default_variant!r} is not among the variants")
        for key, spec in self.variants.items():
            if spec.precision != key:
                raise ValueError(f"variant {key!r} says precision {spec.precision!r}")
            names = ENCODER_INPUT_NAMES if self.task == "translation" else INPUT_NAMES
            if [t.name for t in spec.inputs] != list(names):
                raise ValueError(f"variant {key!r} inputs must be {', '.join(names)}")
            if self.task != "translation":
                fill = self.fill_mask.output if self.fill_mask is not None else None
                expected = output_names(self.task, fill)
                if tuple(t.name for t in spec.outputs) != expected:
                    raise ValueError(f"variant {key!r} outputs must be {', '.join(expected)}")
            if (self.task == "translation") != (spec.decoder is not None):
                raise ValueError(
                    f"variant {key!r}: a decoder graph is for, and only for, translation"
                )
            if spec.rerun is not None:
                again = self.variants.get(spec.rerun.variant)
                if self.task != "qa":
                    raise ValueError(f"variant {key!r}: rerun applies to the qa task only")
                if again is None or again is spec or again.rerun is not None:
                    raise ValueError(
                        f"variant {key!r} reruns in {spec.rerun.variant!r}, which must be "
                        "another variant of the bundle, without a rerun of its own"
                    )
        if (self.task == "translation") != (self.generation is not None):
            raise ValueError("generation is required for, and only for, the translation task")
        if self.target_tokenizer is not None and self.task != "translation":
            raise ValueError("target_tokenizer applies to translation only")
        if self.task in ("classification", "token-classification") and not self.labels:
            raise ValueError(f"a {self.task} bundle needs labels")
        if (self.task == "fill-mask") != (self.fill_mask is not None):
            raise ValueError("fill_mask is required for, and only for, the fill-mask task")
        if self.qa is not None and self.task != "qa":
            raise ValueError("qa applies to the qa task only")
        if self.multi_label and self.task != "classification":
            raise ValueError("multi_label applies to classification only")
        listed = {f.path for f in self.all_files()}
        if self.tokenizer.file not in listed:
            raise ValueError(f"tokenizer file {self.tokenizer.file!r} is not listed in files")
        target = self.target_tokenizer
        if target is not None and target.file not in listed:
            raise ValueError(f"target tokenizer file {target.file!r} is not listed in files")
        return self

    def all_files(self) -> list[FileEntry]:
        """Every file the bundle holds besides the manifest."""
        return [*self.files, *(f for v in self.variants.values() for f in v.file_entries())]


@dataclass(frozen=True)
class Bundle:
    """A verified bundle and the variant chosen to serve it."""

    path: Path
    manifest: Manifest
    variant: VariantSpec

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def task(self) -> Task:
        return self.manifest.task

    @property
    def qa(self) -> QASpec:
        """The QA window settings the bundle was fine-tuned with (else :data:`QA_DEFAULTS`)."""
        return self.manifest.qa or QA_DEFAULTS

    @property
    def model_file(self) -> Path:
        return self.path / self.variant.file

    @property
    def tokenizer_file(self) -> Path:
        return self.path / self.manifest.tokenizer.file

    @property
    def rerun(self) -> VariantSpec | None:
        """The variant that answers again where the served one is unsure (``rerun``)."""
        spec = self.variant.rerun
        return None if spec is None else self.manifest.variants[spec.variant]

    @property
    def decoder_file(self) -> Path | None:
        """Translation: the variant's decoder graph."""
        dec = self.variant.decoder
        return None if dec is None else self.path / dec.file

    @property
    def target_tokenizer_file(self) -> Path:
        """Translation: the tokenizer of generated ids (the source's when shared)."""
        spec = self.manifest.target_tokenizer or self.manifest.tokenizer
        return self.path / spec.file


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entry(folder: Path, relative: str) -> FileEntry:
    """Size and sha256 of ``folder / relative``, as listed in the manifest."""
    p = folder / relative
    return FileEntry(path=relative, size_bytes=p.stat().st_size, sha256=sha256_file(p))


def write_manifest(manifest: Manifest, folder: str | Path) -> Path:
    """Write ``manifest.json`` into ``folder`` (atomically: a reader never sees half a file)."""
    folder = Path(folder)
    text = manifest.model_dump_json(indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".manifest.", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a bundle is read by a service
    target = folder / MANIFEST_FILE
    os.replace(tmp, target)
    return target


def read_manifest(folder: str | Path) -> Manifest:
    """Parse and validate ``manifest.json`` without checking the files it lists."""
    folder = Path(folder)
    file = folder / MANIFEST_FILE
    if not file.is_file():
        raise BundleError(f"{folder} is not a model bundle (no {MANIFEST_FILE})")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{file} is not readable JSON: {_one_line(exc)}") from exc
    if not isinstance(raw, dict):
        raise BundleError(f"{file} must hold a JSON object")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{file} has schema_version {version!r}; this reader knows {SCHEMA_VERSION} "
            "(re-export the bundle with this version of the project)"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise BundleError(
            f"{file} is not a valid manifest ({exc.error_count()} error(s)); first: "
            f"{where}: {first['msg']}"
        ) from exc


def verify_files(folder: Path, manifest: Manifest) -> None:
    """Refuse missing files and files whose size or sha256 differ from the manifest."""
    for entry in manifest.all_files():
        p = folder / entry.path
        # Listed paths must stay inside the bundle, whatever a hand-edited manifest says.
        if Path(entry.path).is_absolute() or ".." in Path(entry.path).parts:
            raise BundleError(f"{folder}: listed file {entry.path!r} is outside the bundle")
        if not p.is_file():
            raise BundleError(f"{folder}: listed file {entry.path} is missing")
        size = p.stat().st_size
        if size != entry.size_bytes:
            raise BundleError(
                f"{folder}: {entry.path} has {size} bytes, the manifest says {entry.size_bytes} "
                "(corrupt or modified; re-export the bundle)"
            )
        if sha256_file(p) != entry.sha256:
            raise BundleError(
                f"{folder}: {entry.path} does not match its sha256 in the manifest "
                "(corrupt or modified; re-export the bundle)"
            )


def pick_variant(
    manifest: Manifest,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    fast_int8: bool | None = None,
) -> VariantSpec:
    """The best variant for the first provider in ``providers`` that has one that passed parity.

    On the CPU, int8 comes first only with ``fast_int8`` (None: this CPU's `fast_int8_cpu`).
    Falls back to the manifest's ``default_variant``.
    """
    if fast_int8 is None:
        fast_int8 = fast_int8_cpu()
    for provider in providers:
        order = PREFERENCE.get(provider, ())
        if provider == "CPUExecutionProvider" and not fast_int8:
            order = SLOW_INT8_CPU_PREFERENCE
        for name in order:
            spec = manifest.variants.get(name)
            if spec is not None and spec.parity.status == "passed":
                return spec
    return manifest.variants[manifest.default_variant]


def load_bundle(
    path: str | Path,
    variant: str | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    *,
    verify: bool = True,
) -> Bundle:
    """Read, validate and verify the bundle at ``path``; raises :class:`BundleError`.

    ``variant`` names the graph to use ("fp32", "int8", "fp16"); None picks one for ``providers``
    with :func:`pick_variant`. ``verify`` checks size and sha256 of every listed file.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise BundleError(f"{folder} is not a folder")
    manifest = read_manifest(folder)
    if variant is None:
        spec = pick_variant(manifest, providers)
    else:
        if variant not in manifest.variants:
            have = ", ".join(manifest.variants)
            raise BundleError(f"{folder} has no variant {variant!r} (it has {have})")
        spec = manifest.variants[variant]
    if verify:
        verify_files(folder, manifest)
    return Bundle(path=folder, manifest=manifest, variant=spec)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
