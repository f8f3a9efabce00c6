"""The interface of whatever runs a model on the batcher's batches, and its implementations.

What the batcher hands over (`WorkItem`, `Batch`, `pad_batch`) is `bundle.batch`, shared with
the export's parity gate.

- `Backend`: `predict(batch)` -> one result per item, in item order; `health()` raises when the
  backend cannot serve. Both are synchronous: the batcher calls them from a worker thread.
- `FakeBackend`: deterministic stand-in for tests (no weights).
- `OnnxBackend`: the onnxruntime implementation (added below, at the marked place).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import numpy as np

from bundle.batch import Batch, Outputs, whole_rows

__all__ = [
    "Backend",
    "FakeBackend",
    "FakeResult",
    "OnnxBackend",
    "RowOutput",
]

R_co = TypeVar("R_co", covariant=True)


class Backend(Protocol[R_co]):
    """Runs a model on padded batches. Called from one worker thread, never the event loop."""

    def predict(self, batch: Batch) -> Sequence[R_co]:
        """Results for every row of `batch`, in row order (len == batch.size)."""
        ...

    def health(self) -> None:
        """Return when the backend can serve; raise with the reason when it cannot."""
        ...


class FakeResult(NamedTuple):
    """What `FakeBackend` answers for one item: enough to check routing and order exactly."""

    length: int
    first_token: int


@dataclass(eq=False)
class FakeBackend:
    """Deterministic backend for tests: result = (sequence length, first token id).

    Args:
        delay_s: seconds each predict call sleeps (simulates inference time).
        fail_on_calls: 1-based predict call numbers that raise RuntimeError.
        gate: when given, predict blocks until the event is set (lets a test hold a batch
            "running" while it queues more work); gives up after 10 s so a broken test fails
            instead of hanging.
        healthy: what health() reports.

    Attributes:
        batches: every batch predict was called with, in call order (failed ones included).
        calls: number of predict calls so far.
    """

    delay_s: float = 0.0
    fail_on_calls: Collection[int] = ()
    gate: threading.Event | None = None
    healthy: bool = True
    batches: list[Batch] = field(default_factory=list)
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def predict(self, batch: Batch) -> list[FakeResult]:
        with self._lock:
            self.calls += 1
            call = self.calls
            self.batches.append(batch)
        if self.gate is not None and not self.gate.wait(timeout=10):
            raise RuntimeError("FakeBackend gate was never opened")
        if self.delay_s:
            time.sleep(self.delay_s)
        if call in self.fail_on_calls:
            raise RuntimeError(f"injected failure on predict call {call}")
        return [FakeResult(item.length, int(item.input_ids[0])) for item in batch.items]

    def health(self) -> None:
        if not self.healthy:
            raise RuntimeError("FakeBackend marked unhealthy")

    def seen_first_tokens(self) -> list[int]:
        """First token of every item of every batch seen (to check what reached the model)."""
        with self._lock:
            return [int(item.input_ids[0]) for b in self.batches for item in b.items]


# --- OnnxBackend ---------------------------------------------------------------------------------

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

# Cuts a batch's outputs (name -> (batch, ...) array) into one entry per row, e.g. dropping the
# padding of per-token outputs; the task module supplies it.
Splitter = Callable[[Outputs, Batch], Sequence[Outputs]]


@dataclass(frozen=True, slots=True)
class RowOutput:
    """One row of a batch's outputs, and when and for how long its batch ran.

    Attributes:
        arrays: output name -> this row's array (shapes depend on the task's splitter).
        started: `time.monotonic()` when the batch was handed to onnxruntime.
        seconds: the batch's inference time (shared by every row of the batch).
        batch_size: rows in that batch.
    """

    arrays: Outputs
    started: float
    seconds: float
    batch_size: int


def cuda_device_present() -> bool:
    """Whether this machine shows an NVIDIA device (onnxruntime-gpu lists CUDA regardless)."""
    import glob
    import platform

    if platform.system() != "Linux":
        return True  # no cheap check elsewhere: let the session creation decide
    return bool(glob.glob("/dev/nvidia[0-9]*"))


class OnnxBackend:
    """An onnxruntime session over one ONNX graph of a bundle.

    Args:
        model_file: the `.onnx` file.
        provider: `CPUExecutionProvider` or `CUDAExecutionProvider`; CUDA falls back to the CPU
            provider inside onnxruntime when the GPU cannot be used: check `self.provider`.
        intra_op_threads: onnxruntime threads inside one run (CPU provider).
        split: cuts a batch's outputs into per-row outputs (see `Splitter`); None keeps each
            output's row `i` whole.
        io_binding: on CUDA, bind inputs and outputs explicitly (one host-to-device copy of
            the inputs, outputs left on the device until copied back once); None = on CUDA only.

    `predict` is called from one worker thread at a time (the batcher's); onnxruntime releases
    the GIL while it runs, so the event loop keeps serving.
    """

    def __init__(
        self,
        model_file: str | Path,
        provider: str = CPU,
        *,
        intra_op_threads: int = 1,
        split: Splitter | None = None,
        io_binding: bool | None = None,
    ) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle worker threads would otherwise spin for a while after every run, taking the
        # cores the event loop and the tokenizer need between batches.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3  # errors only: the CPU fallback warning is logged by us
        providers: list[Any] = [CPU] if provider == CPU else [(CUDA, {"device_id": 0}), CPU]
        self.session = ort.InferenceSession(str(model_file), opts, providers=providers)
        self.provider: str = self.session.get_providers()[0]
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.io_binding = (self.provider == CUDA) if io_binding is None else io_binding
        self._split = split
        self._ort = ort

    def run(self, batch: Batch) -> Outputs:
        """The graph's outputs for `batch`, as float32/int64 host arrays by output name."""
        feed = batch.feed(self.input_names)
        if self.io_binding:
            binding = self.session.io_binding()
            for name, array in feed.items():
                value = self._ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0)
                binding.bind_ortvalue_input(name, value)
            for name in self.output_names:
                binding.bind_output(name, "cuda", 0)
            self.session.run_with_iobinding(binding)
            values = binding.copy_outputs_to_cpu()
        else:
            values = self.session.run(self.output_names, feed)
        out: Outputs = {}
        for name, value in zip(self.output_names, values, strict=True):
            arr = np.asarray(value)
            out[name] = arr.astype(np.float32) if arr.dtype == np.float16 else arr
        return out

    def set_split(self, split: Splitter | None) -> None:
        """Use `split` to cut future batches' outputs into rows."""
        self._split = split

    def predict(self, batch: Batch) -> list[RowOutput]:
        started = time.monotonic()
        outputs = self.run(batch)
        seconds = time.monotonic() - started
        if self._split is None:
            rows: Sequence[Outputs] = whole_rows(outputs, batch.size)
        else:
            rows = self._split(outputs, batch)
        return [RowOutput(r, started, seconds, batch.size) for r in rows]

    def health(self) -> None:
        if self.session is None:  # pragma: no cover - closed sessions are never served
            raise RuntimeError("the session is closed")
