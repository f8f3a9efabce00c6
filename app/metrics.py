"""Every Prometheus metric of the service, in one place, all named `bert_*`.

Metrics live on a registry owned by one `Metrics` object per app instance (never the global
registry), so tests can build several apps in one process. Label values must stay low-cardinality:
`route` is the route template (`/v1/models/{name}/embed`), never the raw path; `model` is a
bundle name from the registry.
"""

from __future__ import annotations

import platform

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

__all__ = ["PREFIX", "Metrics"]

PREFIX = "bert"

# Seconds: from sub-millisecond queueing up to the default 30 s request timeout.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
_RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class Metrics:
    """All service metrics on a private registry.

    Args:
        version: the service version reported by `bert_build_info`.
        registry: registry to register on; a fresh one when omitted.
    """

    def __init__(self, version: str = "unknown", registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        p = PREFIX
        self.requests = Counter(
            f"{p}_requests", "HTTP requests by route template and status code.",
            ["route", "status"], registry=r,
        )  # fmt: skip
        self.request_latency = Histogram(
            f"{p}_request_duration_seconds", "HTTP request latency, end to end.",
            ["route"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_time = Histogram(
            f"{p}_queue_time_seconds", "Time an input waited in the batch queue.",
            ["model", "priority"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference_time = Histogram(
            f"{p}_inference_time_seconds", "Backend time of one batch.",
            ["model"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            f"{p}_queue_depth", "Inputs waiting in the batch queue.", ["model"], registry=r
        )
        self.batch_size = Histogram(
            f"{p}_batch_size", "Inputs per batch.",
            ["model"], buckets=_BATCH_SIZE_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_tokens = Histogram(
            f"{p}_batch_tokens", "Padded tokens per batch (batch size x padded length).",
            ["model"], buckets=_TOKEN_BUCKETS, registry=r,
        )  # fmt: skip
        self.padding_ratio = Histogram(
            f"{p}_padding_ratio", "Share of a batch's tokens that are padding.",
            ["model"], buckets=_RATIO_BUCKETS, registry=r,
        )  # fmt: skip
        self.dropped_requests = Counter(
            f"{p}_dropped_requests", "Requests abandoned by their client (disconnected).",
            ["model"], registry=r,
        )  # fmt: skip
        self.dropped_items = Counter(
            f"{p}_dropped_items", "Queued inputs removed before inference as their client left.",
            ["model"], registry=r,
        )  # fmt: skip
        self.rejected = Counter(
            f"{p}_rejected_requests",
            "Requests refused with 429: the queue (or the priority's share) was full, or the "
            "predicted latency passed the objective.",
            ["model", "priority"], registry=r,
        )  # fmt: skip
        self.timeouts = Counter(
            f"{p}_timeouts", "Requests that passed, or could not meet, their deadline (504).",
            ["model", "priority"], registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            f"{p}_tokens", "Real (unpadded) tokens sent to the model.", ["model"], registry=r
        )
        self.reruns = Counter(
            f"{p}_reruns",
            "Inputs a cascade answered again with the bundle's rerun graph (qa int8: answers "
            "within the manifest's margin of another, rerun in fp32; outcome 'skipped': the "
            "rerun was refused or late and the first answer stood); the rerun graph's batches "
            "carry the model label '<model>:rerun'.",
            ["model", "outcome"], registry=r,
        )  # fmt: skip
        self.models_failed = Gauge(
            f"{p}_models_failed", "Bundles refused at start-up (see /v1/models).", registry=r
        )
        self.model_load_time = Gauge(
            f"{p}_model_load_seconds", "Time taken to load (and warm up) a model.",
            ["model"], registry=r,
        )  # fmt: skip
        self.build_info = Info(f"{p}_build", "Service version and runtime.", registry=r)
        self.build_info.info({"version": version, "python": platform.python_version()})

    # --- helpers used by the batcher (model-labelled) and the HTTP layer ---

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Count one finished HTTP request and its latency; `route` is the route template."""
        self.requests.labels(route=route, status=str(status)).inc()
        self.request_latency.labels(route=route).observe(seconds)

    def set_queue_depth(self, model: str, depth: int) -> None:
        """Record the number of inputs now queued for `model`."""
        self.queue_depth.labels(model=model).set(depth)

    def observe_batch(
        self, model: str, size: int, padded_tokens: int, padding_ratio: float
    ) -> None:
        """Record the shape of one dispatched batch."""
        self.batch_size.labels(model=model).observe(size)
        self.batch_tokens.labels(model=model).observe(padded_tokens)
        self.padding_ratio.labels(model=model).observe(padding_ratio)

    def observe_queue_time(self, model: str, seconds: float, priority: str = "normal") -> None:
        """Record how long one input of `priority` waited before its batch started."""
        self.queue_time.labels(model=model, priority=priority).observe(seconds)

    def observe_inference_time(self, model: str, seconds: float) -> None:
        """Record the backend time of one batch."""
        self.inference_time.labels(model=model).observe(seconds)

    def inc_dropped(self, model: str, items: int) -> None:
        """Count one abandoned request and the `items` of it removed from the queue."""
        self.dropped_requests.labels(model=model).inc()
        self.dropped_items.labels(model=model).inc(items)

    def inc_rejected(self, model: str, priority: str = "normal") -> None:
        """Count one request of `priority` refused with 429."""
        self.rejected.labels(model=model, priority=priority).inc()

    def inc_timeout(self, model: str, priority: str = "normal") -> None:
        """Count one request of `priority` that passed, or could not meet, its deadline."""
        self.timeouts.labels(model=model, priority=priority).inc()

    def inc_tokens(self, model: str, tokens: int) -> None:
        """Count the real tokens of one request sent to `model`."""
        self.tokens.labels(model=model).inc(tokens)

    def inc_reruns(self, model: str, inputs: int, outcome: str = "rerun") -> None:
        """Count `inputs` of one request answered again by `model`'s rerun graph (or, outcome
        "skipped", that were to be and kept their first answer)."""
        self.reruns.labels(model=model, outcome=outcome).inc(inputs)

    def set_model_load_time(self, model: str, seconds: float) -> None:
        """Record how long `model` took to load."""
        self.model_load_time.labels(model=model).set(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text for /metrics and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
