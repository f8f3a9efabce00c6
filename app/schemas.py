"""Request and response bodies of the HTTP API (pydantic; they are also the OpenAPI schema).

Every task response has the same frame: `model` (the bundle that answered), `results` (one entry
per input, in input order, also for a single input) and `usage`. Limits that depend on settings
(inputs per request, sequence length) are checked by the service, not here, so that the OpenAPI
schema does not change with the configuration.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ClassifyRequest",
    "ClassifyResponse",
    "ErrorResponse",
    "FillMaskRequest",
    "FillMaskResponse",
    "QARequest",
    "QAResponse",
    "SummarizeRequest",
    "SummarizeResponse",
    "TokenClassifyRequest",
    "TokenClassifyResponse",
    "TokenizeRequest",
    "TokenizeResponse",
    "TranslateRequest",
    "TranslateResponse",
]


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("text is empty (only whitespace)")
    return text


Text = Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]
TextList = Annotated[list[Text], Field(min_length=1)]
PairList = Annotated[list[tuple[Text, Text]], Field(min_length=1)]
ModelName = Annotated[
    str | None,
    Field(
        description="Bundle name (GET /v1/models); may be omitted when one bundle of the task "
        "is loaded.",
    ),
]


class _Request(BaseModel):
    # Unknown fields are errors: a misspelt option ("topk") must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


# Scheduling classes of a request, most urgent first (the batcher's order: app.scheduling).
Priority = Literal["high", "normal", "low"]


class _TaskRequest(_Request):
    """Fields of every request that is queued for a model: how it is scheduled."""

    priority: Priority = Field(
        default="normal",
        description="Scheduling class: higher classes are served first; under overload "
        '"low" is refused (429) before the others wait.',
    )
    timeout_ms: int | None = Field(
        default=None,
        ge=1,
        le=3_600_000,
        description="Deadline in ms from arrival (capped by the server's request timeout). "
        "Earlier deadlines are served first within a class; a request that cannot be answered "
        "in time gets 504 at once, not after it has run.",
    )


class Usage(BaseModel):
    inputs: int = Field(description="Inputs in the request.")
    tokens: int = Field(
        description="Tokens the model processed for this request (every QA window counted)."
    )


class _Response(BaseModel):
    model: str = Field(description="The bundle that answered.")
    usage: Usage


# --- classification ------------------------------------------------------------------------------


class ClassifyRequest(_TaskRequest):
    model: ModelName = None
    inputs: Text | TextList | PairList = Field(
        description="A text, a list of texts, or a list of [text, text_pair] pairs.",
        examples=["a gripping, beautifully shot film", [["a man sleeps", "a person rests"]]],
    )
    top_k: int | None = Field(
        default=None, ge=1, description="Labels per input, best first (default: all)."
    )
    truncate: bool = Field(
        default=True,
        description="Cut inputs longer than the model's max length; false refuses them (422).",
    )


class LabelScore(BaseModel):
    label: str
    score: float = Field(description="Softmax probability, or sigmoid for multi-label models.")


class ClassifyResult(BaseModel):
    labels: list[LabelScore] = Field(description="Best first.")


class ClassifyResponse(_Response):
    results: list[ClassifyResult]


# --- extractive QA -------------------------------------------------------------------------------


class QAPair(_Request):
    question: Text
    context: Text


class QARequest(_TaskRequest):
    """One pair as `question` + `context`, or several as `inputs`."""

    model: ModelName = None
    question: Text | None = None
    context: Text | None = None
    inputs: list[QAPair] | None = Field(default=None, min_length=1)
    top_k: int = Field(default=1, ge=1, le=20, description="Answers per question, best first.")
    max_answer_length: int | None = Field(
        default=None,
        ge=1,
        le=512,
        description="Longest answer, in tokens (default: the model's, as it was fine-tuned; 30 "
        "for models that do not say).",
    )
    allow_no_answer: bool = Field(
        default=False,
        description="SQuAD v2: answer nothing when the model's no-answer score wins.",
    )

    @model_validator(mode="after")
    def _one_form(self) -> QARequest:
        single = self.question is not None or self.context is not None
        if self.inputs is not None and single:
            raise ValueError("give either question+context or inputs, not both")
        if self.inputs is None and (self.question is None or self.context is None):
            raise ValueError("give question and context, or inputs: [{question, context}, ...]")
        return self

    def pairs(self) -> list[QAPair]:
        if self.inputs is not None:
            return self.inputs
        assert self.question is not None and self.context is not None
        return [QAPair(question=self.question, context=self.context)]


class QAAnswer(BaseModel):
    text: str = Field(description="Exactly context[start:end].")
    start: int = Field(description="Character offset in the given context.")
    end: int = Field(description="Character offset in the given context (exclusive).")
    score: float = Field(description="Probability among the candidate spans.")


class QAResult(BaseModel):
    answers: list[QAAnswer] = Field(description="Best first; empty when no_answer.")
    no_answer: bool = False
    no_answer_score: float | None = Field(
        default=None, description="Probability of 'no answer' (with allow_no_answer)."
    )
    windows: int = Field(description="Windows the context was read in.")


class QAResponse(_Response):
    results: list[QAResult]


# --- fill-mask -----------------------------------------------------------------------------------


class FillMaskRequest(_TaskRequest):
    model: ModelName = None
    inputs: Text | TextList = Field(
        description="Text(s) holding the mask token, e.g. 'Paris is the [MASK] of France.'"
    )
    top_k: int = Field(default=5, ge=1, description="Candidate tokens per mask.")
    truncate: bool = True


class TokenScore(BaseModel):
    token: str
    id: int
    score: float


class MaskPrediction(BaseModel):
    start: int = Field(description="Character offset of the mask in the input.")
    end: int
    tokens: list[TokenScore] = Field(description="Best first.")


class FillMaskResult(BaseModel):
    sequence: str = Field(description="The input with every mask replaced by its best token.")
    masks: list[MaskPrediction]


class FillMaskResponse(_Response):
    results: list[FillMaskResult]


# --- token classification ------------------------------------------------------------------------


class TokenClassifyRequest(_TaskRequest):
    model: ModelName = None
    inputs: Text | TextList
    truncate: bool = True


class Entity(BaseModel):
    label: str = Field(description="Entity type (the tag without its B-/I- prefix).")
    text: str = Field(description="Exactly input[start:end].")
    start: int
    end: int
    score: float = Field(description="Mean probability of the entity's word tags.")


class TokenClassifyResult(BaseModel):
    entities: list[Entity]


class TokenClassifyResponse(_Response):
    results: list[TokenClassifyResult]


# --- extractive summarization --------------------------------------------------------------------


class SummarizeRequest(_TaskRequest):
    model: ModelName = None
    inputs: Text | TextList = Field(
        description="A document, or a list of documents (English or Chinese).",
        examples=["The council met on Monday. It approved the budget. Rain is expected."],
    )
    max_sentences: int = Field(
        default=3,
        ge=1,
        le=64,
        description="Sentences per summary at most (fewer when the document has fewer, or when "
        "trigram blocking skips a sentence that repeats one already chosen).",
    )
    truncate: bool = Field(
        default=True,
        description="Read only the sentences that fit the model's max length (the rest are "
        "never chosen; see sentences_read); false refuses longer documents (422).",
    )


class SummarySentence(BaseModel):
    index: int = Field(description="Position among the document's sentences (0-based).")
    text: str = Field(description="Exactly input[start:end].")
    start: int = Field(description="Character offset in the given input.")
    end: int = Field(description="Character offset in the given input (exclusive).")
    score: float = Field(description="Sigmoid score of the sentence belonging in the summary.")


class SummarizeResult(BaseModel):
    summary: str = Field(description="The chosen sentences in document order, one per line.")
    sentences: list[SummarySentence] = Field(description="The chosen sentences, document order.")
    sentences_total: int = Field(description="Sentences the document was split into.")
    sentences_read: int = Field(
        description="Sentences the model scored; those after them lie beyond its max length."
    )
    truncated: bool = Field(description="Whether some of the document was not read.")


class SummarizeResponse(_Response):
    results: list[SummarizeResult]


# --- translation ---------------------------------------------------------------------------------


class TranslateRequest(_TaskRequest):
    model: ModelName = None
    inputs: Text | TextList = Field(
        description="A source text, or a list of them.", examples=["A dog runs in the park."]
    )
    beam_size: int | None = Field(
        default=None,
        ge=1,
        description="Beams (1: greedy decoding; default: the bundle's); at most the bundle's "
        "max_beams (GET /v1/models), else 422.",
    )
    max_new_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Tokens generated per input at most (default: the bundle's); at most the "
        "decoder's positions, else 422.",
    )
    truncate: bool = Field(
        default=True,
        description="Cut sources longer than the model's max length; false refuses them (422).",
    )


class TranslateResult(BaseModel):
    translation: str = Field(description="The generated text (special tokens removed).")
    tokens: int = Field(description="Tokens generated (the end token not counted).")


class TranslateResponse(_Response):
    results: list[TranslateResult]


# --- tokenize ------------------------------------------------------------------------------------


class TokenizeRequest(_Request):
    model: ModelName = None
    inputs: Text | TextList | PairList


class Token(BaseModel):
    id: int
    token: str
    start: int = Field(description="Character offset in its text (0 for special tokens).")
    end: int
    type_id: int
    special: bool


class TokenizeResult(BaseModel):
    tokens: list[Token]
    truncated: bool = Field(description="Whether the model would cut this input.")


class TokenizeResponse(_Response):
    results: list[TokenizeResult]


# --- service -------------------------------------------------------------------------------------


class ModelInfo(BaseModel):
    name: str
    task: str
    path: str
    labels: list[str]
    multi_label: bool
    variant: str = Field(description="The ONNX variant in use: fp32, int8 or fp16.")
    provider: str = Field(description="The onnxruntime execution provider in use.")
    max_length: int = Field(description="Longest input in tokens, special tokens included.")
    parity: dict[str, Any] = Field(description="The variant's parity figures from export.")
    evaluation: dict[str, Any] = Field(description="Evaluation figures from the manifest.")
    generation: dict[str, Any] | None = Field(
        default=None,
        description="Translation: generation settings (default and max beams, max_new_tokens).",
    )
    rerun: dict[str, Any] | None = Field(
        default=None,
        description="A cascade (qa int8): answers within `max_margin` (logits) of another are "
        "answered again by `variant`; `share`, `agreement`, `metric`: on the export's held-out "
        "questions.",
    )
    load_seconds: float


class FailedModel(BaseModel):
    name: str
    path: str
    reason: str


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    failed: list[FailedModel] = Field(description="Bundles refused at start-up, with the reason.")
    loading: bool = Field(description="True while models are still loading.")


class Status(BaseModel):
    status: Literal["ok", "ready"]
    models: list[str] = []


class ErrorInfo(BaseModel):
    type: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorInfo
