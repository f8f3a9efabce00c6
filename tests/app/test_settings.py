"""Settings: environment reading, defaults, immutability and start-up refusals."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import ValidationError

from app.batching import BatcherConfig
from app.settings import Settings, get_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment without BERT_* or PORT."""
    for name in list(os.environ):
        if name.startswith("BERT_") or name == "PORT":
            monkeypatch.delenv(name)


def test_defaults() -> None:
    s = Settings()
    assert (s.port, s.max_batch_tokens, s.max_batch_size, s.max_wait_ms) == (8000, 8192, 32, 5.0)
    assert (s.queue_size, s.request_timeout_s, s.max_inputs_per_request) == (1024, 30.0, 256)
    assert s.max_body_bytes == 1024 * 1024
    assert (s.inference_workers, s.intra_op_threads) == (1, None)
    assert s.inference_threads == len(os.sched_getaffinity(0))
    assert s.models == ()
    assert s.cors_origins == ()
    assert s.api_key is None
    assert (s.variant, s.provider, s.log_format) == ("auto", "auto", "json")


def test_inference_threads_share_the_cores_among_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert Settings().inference_threads == 8
    assert Settings(inference_workers=2).inference_threads == 4
    assert Settings(inference_workers=3).inference_threads == 2
    assert Settings(inference_workers=16).inference_threads == 1
    assert Settings(inference_workers=2, intra_op_threads=3).inference_threads == 3  # as set


def test_reads_bert_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERT_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("BERT_MODELS", " sst2, squad ,")
    monkeypatch.setenv("BERT_CORS_ORIGINS", "https://a.example,https://b.example")
    monkeypatch.setenv("BERT_VARIANT", "int8")
    monkeypatch.setenv("BERT_API_KEY", "s3cret")
    monkeypatch.setenv("BERT_DATA_DIR", "/elsewhere")  # other tools' BERT_* vars are ignored
    s = Settings()
    assert s.max_batch_size == 16
    assert s.models == ("sst2", "squad")
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert s.variant == "int8"
    assert s.api_key is not None
    assert s.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)


def test_port_honours_plain_PORT_but_BERT_PORT_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9000")
    assert Settings().port == 9000
    monkeypatch.setenv("BERT_PORT", "9100")
    assert Settings().port == 9100
    assert Settings(port=1234).port == 1234


def test_empty_api_key_means_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERT_API_KEY", "  ")
    assert Settings().api_key is None


def test_is_frozen_and_refuses_unknown_fields() -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.port = 1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Settings(max_batch_sise=3)  # type: ignore[call-arg]


def test_get_settings_builds_one_object() -> None:
    get_settings.cache_clear()
    try:
        assert get_settings() is get_settings()
    finally:
        get_settings.cache_clear()


def test_every_field_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert len(field.description or "") > 15, f"{name} has no help text"


@pytest.mark.parametrize(
    ("overrides", "fix"),
    [
        ({"max_batch_size": 0}, "set BERT_MAX_BATCH_SIZE to 1 or more"),
        ({"max_batch_tokens": 0}, "set BERT_MAX_BATCH_TOKENS"),
        (
            {"queue_size": 8, "max_batch_size": 16, "max_inputs_per_request": 8},
            "raise BERT_QUEUE_SIZE",
        ),
        ({"queue_size": 64, "max_inputs_per_request": 100}, "lower BERT_MAX_INPUTS_PER_REQUEST"),
        ({"max_wait_ms": 2000, "request_timeout_s": 1}, "lower BERT_MAX_WAIT_MS"),
        ({"request_timeout_s": 0}, "BERT_REQUEST_TIMEOUT_S above 0"),
        ({"max_wait_ms": -1}, "BERT_MAX_WAIT_MS to 0 or more"),
        ({"max_batch_in_flight": 0}, "BERT_MAX_BATCH_IN_FLIGHT to 1 or more"),
        ({"inference_workers": 0}, "BERT_INFERENCE_WORKERS to 1 or more"),
        ({"intra_op_threads": 0}, "BERT_INTRA_OP_THREADS to 1"),
        ({"max_body_bytes": 0}, "BERT_MAX_BODY_BYTES to 1 or more"),
        ({"port": 70000}, "BERT_PORT between 1 and 65535"),
        ({"metrics_requires_key": True}, "set BERT_API_KEY or set BERT_METRICS_REQUIRES_KEY=false"),
        ({"qa_doc_stride": -1}, "BERT_QA_DOC_STRIDE"),
        ({"qa_max_query_length": 0}, "BERT_QA_MAX_QUERY_LENGTH"),
    ],
)
def test_impossible_combinations_are_refused_with_the_fix(
    overrides: dict[str, Any], fix: str
) -> None:
    with pytest.raises(ValidationError, match=fix):
        Settings(**overrides)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(max_batch_size=0, intra_op_threads=0)
    assert "BERT_MAX_BATCH_SIZE" in str(info.value)
    assert "BERT_INTRA_OP_THREADS" in str(info.value)


def test_metrics_key_is_fine_with_an_api_key() -> None:
    assert Settings(metrics_requires_key=True, api_key="k").metrics_requires_key


def test_batch_token_budget_must_hold_the_longest_input() -> None:
    s = Settings(max_batch_tokens=256)
    s.check_max_seq_len("tiny", 256)
    with pytest.raises(ValueError, match="set BERT_MAX_BATCH_TOKENS to at least 512"):
        s.check_max_seq_len("tiny", 512)


def test_batcher_config_from_settings() -> None:
    s = Settings(
        max_batch_tokens=4096,
        max_batch_size=8,
        max_wait_ms=20,
        queue_size=64,
        max_inputs_per_request=64,
        max_padding_ratio=0.25,
    )
    assert BatcherConfig.from_settings(s) == BatcherConfig(
        max_padding_ratio=0.25,
        max_batch_tokens=4096,
        max_batch_size=8,
        max_wait_s=0.02,
        queue_size=64,
        max_in_flight=2,
        idle_dispatch=True,  # the service default; BatcherConfig's own default waits
    )
