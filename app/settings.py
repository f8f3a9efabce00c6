"""The service's one settings object, read from the environment once at start-up.

Every field is settable as `BERT_<FIELD>` (upper case); its description is the help text.
Impossible combinations are refused here, at start-up, with a sentence that says the fix.
The object is frozen: build it once (`get_settings()` or `Settings()` in tests) and pass it on.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "available_cores", "get_settings", "reference_markdown"]

MIB = 1024 * 1024


def available_cores() -> int:
    """CPU cores this process may run on (respects taskset/cgroup affinity, unlike cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS/Windows have no sched_getaffinity
        return os.cpu_count() or 1


# Comma lists ("a,b") are read as text, not JSON, hence NoDecode + the splitting validator.
CommaList = Annotated[tuple[str, ...], NoDecode]


class Settings(BaseSettings):
    """Configuration of the inference service (all from `BERT_*` environment variables)."""

    model_config = SettingsConfigDict(
        env_prefix="BERT_",
        frozen=True,
        extra="forbid",
        populate_by_name=True,
    )

    # --- models ---
    models_dir: Path = Field(
        default=Path("models"), description="Folder holding one sub-folder (bundle) per model."
    )
    models: CommaList = Field(
        default=(),
        description="Comma list of bundle names to serve; empty serves every bundle found.",
    )
    variant: Literal["auto", "fp32", "int8", "fp16"] = Field(
        default="auto",
        description="ONNX variant to load: auto picks fp16 on CUDA; on a CPU, int8 where it has "
        "int8 dot-product instructions (VNNI, AMX, Arm dotprod), else fp32 (int8 runs no faster "
        "without them); only variants that passed their parity gate.",
    )
    provider: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="onnxruntime execution provider: auto uses CUDA when available."
    )

    # --- network ---
    host: str = Field(
        default="127.0.0.1", description="Address to bind; use 0.0.0.0 inside a container."
    )
    port: int = Field(
        default=8000,
        validation_alias=AliasChoices("BERT_PORT", "PORT"),
        description="TCP port to listen on (BERT_PORT, else the platform's PORT).",
    )

    # --- batching ---
    max_batch_tokens: int = Field(
        default=8192,
        description="Token budget of one batch: padded length x batch size never exceeds it.",
    )
    max_batch_size: int = Field(default=32, description="Most inputs in one batch.")
    max_batch_in_flight: int = Field(
        default=2,
        description="Batches handed to the backend at once per model: one runs while the next "
        "is prepared (with several inference workers: workers + this - 1).",
    )
    inference_workers: int = Field(
        default=1,
        description="Batches of one model that run at once, each in its own thread with "
        "BERT_INTRA_OP_THREADS threads. Under load on few cores, more workers with fewer threads "
        "serve more (2 x 1 vs 1 x 2 on 2 cores: SST-2 sentences 1.1-1.3x, SQuAD questions "
        "1.2x), while a lone request gets fewer threads and is slower (SQuAD: 0.8x).",
    )
    max_generation_batches: int = Field(
        default=8,
        description="Translation: batches generating at once per model. Their sequences share "
        "every decoder step, and a new batch joins at the next step (continuous batching); 1 "
        "runs one batch's whole generation at a time (static batching).",
    )
    max_wait_ms: float = Field(
        default=5.0,
        description="Longest time the oldest queued input waits for its batch to fill before "
        "the batch is sent anyway.",
    )
    max_padding_ratio: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Largest share of a batch that may be padding: an input that would pass it "
        "waits for a later batch of closer lengths (1 = no limit). On a CPU a padded token "
        "costs as much as a real one; GPUs may pay off with more.",
    )
    idle_dispatch: bool = Field(
        default=True,
        description="Send queued inputs at once when the model is idle instead of waiting "
        "max_wait_ms for more (batches still form while a batch runs); false always waits.",
    )
    queue_size: int = Field(
        default=1024,
        description="Most inputs queued per model; beyond it requests are refused with 429 "
        '("low" priority requests may fill half of it).',
    )
    grouping_patience: int = Field(
        default=4,
        ge=0,
        description="Batches of its own priority that may pass an input over to group similar "
        "lengths before it must go in the next one: bounds the tail under saturation (0: FIFO "
        "order, no length grouping).",
    )
    target_p99_ms: float | None = Field(
        default=None,
        gt=0,
        description="Latency objective in ms (unset: none). Batches are cut to run within a "
        "quarter of it, by a line fitted to recent batch times against their tokens, and a "
        "request predicted to finish later is refused at once with 429 and Retry-After.",
    )

    # --- requests ---
    request_timeout_s: float = Field(
        default=30.0, description="Deadline of one request, in seconds; past it the answer is 504."
    )
    max_inputs_per_request: int = Field(
        default=256,
        description="Most inputs (texts, pairs or questions) in one request (else 422).",
    )
    max_body_bytes: int = Field(
        default=MIB, description="Largest request body in bytes (else 413)."
    )

    # --- runtime ---
    intra_op_threads: int | None = Field(
        default=None,
        description="onnxruntime threads inside one inference run; unset: the cores this "
        "process may use, shared among the inference workers (translation: all of them).",
    )
    warmup: bool = Field(
        default=True,
        description="Run a few batch shapes through every model at start-up before reporting "
        "ready.",
    )
    shutdown_grace_s: float = Field(
        default=0.0,
        description="After SIGTERM, keep the port open this many seconds (readyz answers 503, "
        "new work is refused) while queued work finishes, so load balancers notice.",
    )

    # --- extractive QA ---
    qa_doc_stride: int | None = Field(
        default=None,
        description="QA: context tokens shared by consecutive windows of a long context "
        "(capped at half a window's context room); default: the bundle's, as it was "
        "fine-tuned (128 for bundles that do not say).",
    )
    qa_max_query_length: int | None = Field(
        default=None,
        description="QA: questions are cut to this many tokens (capped at a quarter of the "
        "model's max length); default: the bundle's (64 for bundles that do not say).",
    )

    # --- security and observability ---
    api_key: SecretStr | None = Field(
        default=None,
        description="If set, requests must send 'Authorization: Bearer <key>'; unset means open.",
    )
    metrics_requires_key: bool = Field(
        default=False, description="Require the API key on /metrics too (needs BERT_API_KEY)."
    )
    cors_origins: CommaList = Field(
        default=(),
        description="Comma list of origins allowed by CORS ('*' for any); empty turns CORS off.",
    )
    log_format: Literal["json", "text"] = Field(
        default="json", description="Log lines as JSON objects (for collectors) or plain text."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Least severe log level written."
    )

    @field_validator("models", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("api_key", "target_p99_ms", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # BERT_API_KEY= (empty) must mean "no key", never "the empty key"; an empty
        # BERT_TARGET_P99_MS (compose passes unset variables so) means no objective.
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        problems = [msg for ok, msg in self._rules() if not ok]
        if problems:
            raise ValueError(" ".join(problems))
        return self

    def _rules(self) -> list[tuple[bool, str]]:
        """(condition that must hold, sentence saying the fix) for every cross-field rule."""
        return [
            (1 <= self.port <= 65535, f"port is {self.port}; set BERT_PORT between 1 and 65535."),
            (
                self.max_batch_size >= 1,
                f"max_batch_size is {self.max_batch_size}; set BERT_MAX_BATCH_SIZE to 1 or more.",
            ),
            (
                self.max_batch_tokens >= 1,
                f"max_batch_tokens is {self.max_batch_tokens}; set BERT_MAX_BATCH_TOKENS to at "
                "least the models' max sequence length (e.g. 8192).",
            ),
            (
                self.max_batch_in_flight >= 1,
                f"max_batch_in_flight is {self.max_batch_in_flight}; set "
                "BERT_MAX_BATCH_IN_FLIGHT to 1 or more (2 overlaps preparation and inference).",
            ),
            (
                self.inference_workers >= 1,
                f"inference_workers is {self.inference_workers}; set BERT_INFERENCE_WORKERS to 1 "
                "or more.",
            ),
            (
                self.max_generation_batches >= 1,
                f"max_generation_batches is {self.max_generation_batches}; set "
                "BERT_MAX_GENERATION_BATCHES to 1 or more (1 = static batching).",
            ),
            (
                self.max_wait_ms >= 0,
                f"max_wait_ms is {self.max_wait_ms}; set BERT_MAX_WAIT_MS to 0 or more.",
            ),
            (
                self.queue_size >= self.max_batch_size,
                f"queue_size ({self.queue_size}) is smaller than max_batch_size "
                f"({self.max_batch_size}), so no batch could ever fill; raise BERT_QUEUE_SIZE or "
                "lower BERT_MAX_BATCH_SIZE.",
            ),
            (
                self.max_inputs_per_request >= 1,
                f"max_inputs_per_request is {self.max_inputs_per_request}; set "
                "BERT_MAX_INPUTS_PER_REQUEST to 1 or more.",
            ),
            (
                self.max_inputs_per_request <= self.queue_size,
                f"max_inputs_per_request ({self.max_inputs_per_request}) exceeds queue_size "
                f"({self.queue_size}), so the largest allowed request could never be queued; "
                "raise BERT_QUEUE_SIZE or lower BERT_MAX_INPUTS_PER_REQUEST.",
            ),
            (
                self.request_timeout_s > 0,
                f"request_timeout_s is {self.request_timeout_s}; set BERT_REQUEST_TIMEOUT_S "
                "above 0.",
            ),
            (
                self.max_wait_ms < self.request_timeout_s * 1000,
                f"max_wait_ms ({self.max_wait_ms}) is not below the request timeout "
                f"({self.request_timeout_s} s), so lone requests would time out while waiting; "
                "lower BERT_MAX_WAIT_MS or raise BERT_REQUEST_TIMEOUT_S.",
            ),
            (
                self.max_body_bytes >= 1,
                f"max_body_bytes is {self.max_body_bytes}; set BERT_MAX_BODY_BYTES to 1 or more "
                f"(default {MIB}).",
            ),
            (
                self.intra_op_threads is None or self.intra_op_threads >= 1,
                f"intra_op_threads is {self.intra_op_threads}; set BERT_INTRA_OP_THREADS to 1 "
                "or more, or unset it to share the available cores among the inference workers.",
            ),
            (
                self.shutdown_grace_s >= 0,
                f"shutdown_grace_s is {self.shutdown_grace_s}; set BERT_SHUTDOWN_GRACE_S to 0 "
                "or more.",
            ),
            (
                (self.qa_doc_stride is None or self.qa_doc_stride >= 0)
                and (self.qa_max_query_length is None or self.qa_max_query_length >= 1),
                "qa_doc_stride must be 0 or more and qa_max_query_length 1 or more; fix "
                "BERT_QA_DOC_STRIDE / BERT_QA_MAX_QUERY_LENGTH.",
            ),
            (
                not self.metrics_requires_key or self.api_key is not None,
                "metrics_requires_key is on but no api_key is set; set BERT_API_KEY or set "
                "BERT_METRICS_REQUIRES_KEY=false.",
            ),
        ]

    @property
    def inference_threads(self) -> int:
        """onnxruntime threads of one inference run: intra_op_threads where set, else the cores
        this process may use shared among the inference workers (2 workers on 2 cores: 1 each,
        not 2 each fighting for the same cores)."""
        return self.intra_op_threads or max(1, available_cores() // self.inference_workers)

    def check_max_seq_len(self, model: str, max_seq_len: int) -> None:
        """Refuse a model whose longest input could not fit in one batch.

        Called once per bundle at load time, when the sequence length is known.

        Args:
            model: the bundle name, for the message.
            max_seq_len: the longest input (in tokens) the model accepts.

        Raises:
            ValueError: when `max_batch_tokens < max_seq_len`.
        """
        if self.max_batch_tokens < max_seq_len:
            raise ValueError(
                f"max_batch_tokens ({self.max_batch_tokens}) is smaller than the max sequence "
                f"length of model {model!r} ({max_seq_len}), so its longest inputs could never "
                f"be batched; set BERT_MAX_BATCH_TOKENS to at least {max_seq_len}."
            )


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first call."""
    return Settings()


def _default_text(name: str) -> str:
    value = Settings.model_fields[name].default
    if value is None:
        return "unset"
    if isinstance(value, tuple):
        return ",".join(value) or "empty"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def settings_table() -> str:
    """The Markdown table of every setting: variable, flag, default, description."""
    lines = ["| variable | flag | default | description |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        env = f"`BERT_{name.upper()}`" + (" (or `PORT`)" if name == "port" else "")
        flag = "--" + name.replace("_", "-")
        desc = (field.description or "").replace("|", "\\|")
        lines.append(f"| {env} | `{flag}` | {_default_text(name)} | {desc} |")
    return "\n".join(lines) + "\n"


def reference_markdown() -> str:
    """docs/CONFIGURATION.md: the settings table with its preamble (the README holds the table
    too; a test keeps both in step)."""
    head = [
        "# Configuration",
        "",
        "Generated from `app/settings.py` (`python -m app --write-config-doc "
        "docs/CONFIGURATION.md`); a test fails when this file and the settings differ.",
        "",
        "Every setting is an environment variable and a flag of `python -m app` (the flag wins).",
        "Comma lists are written `a,b`; an empty `BERT_API_KEY` means no key.",
        "",
    ]
    return "\n".join(head) + "\n" + settings_table()
