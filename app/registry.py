"""Find the bundles in the models folder, verify them, and load each into a servable model.

A bundle that cannot be served (bad checksum, missing file, unknown schema version, a session
that will not load) is refused with a one-line reason in the log and kept in `failures`; the
others still serve. Loading (sha256 of every file, session creation, warm-up) is blocking work:
the service runs `load` in a thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.backend import CPU, CUDA, OnnxBackend, RowOutput, cuda_device_present
from app.batching import Batcher
from app.generation import Seq2Seq, Seq2SeqBackend
from app.settings import Settings, available_cores
from bundle.batch import pad_batch
from bundle.manifest import (
    MANIFEST_FILE,
    Bundle,
    BundleError,
    RerunSpec,
    load_bundle,
    read_manifest,
)

__all__ = ["Failure", "LoadedModel", "Registry", "Rerun", "choose_provider", "warm_up"]

log = logging.getLogger(__name__)


@dataclass
class Rerun:
    """The graph that answers again where the served one is unsure (the bundle variant's
    `rerun`: a qa int8 cascade reruns its near-tie answers in fp32), with its own batcher."""

    spec: RerunSpec
    backend: OnnxBackend
    batcher: Batcher[RowOutput] | None = None


@dataclass
class LoadedModel:
    """A bundle ready to serve: its task model, its session and (once started) its batcher;
    `rerun` where its variant is a cascade."""

    bundle: Bundle
    task_model: Any  # app.tasks.TaskModel subclass
    backend: OnnxBackend | Seq2SeqBackend  # translation: encoder + decoder sessions
    load_seconds: float
    batcher: Batcher[RowOutput] | None = None
    rerun: Rerun | None = None

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def task(self) -> str:
        return self.bundle.task


@dataclass(frozen=True)
class Failure:
    """A bundle refused at start-up."""

    name: str
    path: str
    reason: str


def choose_provider(setting: str) -> tuple[str, str]:
    """(provider to try, why) for the `provider` setting: auto tries CUDA where a GPU shows."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if setting == "cpu":
        return CPU, "provider=cpu"
    if setting == "cuda":
        return CUDA, "provider=cuda"
    if CUDA in available and cuda_device_present():
        return CUDA, "auto: onnxruntime has CUDA and a GPU is present"
    return CPU, "auto: no usable GPU" if CUDA in available else "auto: CPU-only onnxruntime"


def warm_up(model: LoadedModel, settings: Settings) -> None:
    """Run a few batch shapes once through each graph, so the first requests do not pay for
    allocations."""
    longest = min(model.task_model.max_length, settings.max_batch_tokens)
    shapes = {(1, 8), (min(4, settings.max_batch_size), min(32, longest))}
    size = min(settings.max_batch_size, max(1, settings.max_batch_tokens // min(128, longest)))
    shapes.add((size, min(128, longest)))
    backends = [model.backend, *([model.rerun.backend] if model.rerun else [])]
    for n, length in sorted(shapes):
        batch = pad_batch(model.task_model.warmup_items(n, length))
        for backend in backends:
            backend.predict(batch)


@dataclass
class Registry:
    """The models of one service.

    Args:
        settings: models_dir, models (names to serve), variant, provider, threads, QA windows.
        make_task_model: builds the task model of a bundle (app.tasks.make_task_model).
    """

    settings: Settings
    make_task_model: Callable[..., Any]
    models: dict[str, LoadedModel] = field(default_factory=dict)
    failures: dict[str, Failure] = field(default_factory=dict)
    provider: str = CPU

    def discover(self) -> list[tuple[str, Path]]:
        """(folder name, path) of the bundles to load; what cannot even be found is a failure."""
        root = self.settings.models_dir
        if not root.is_dir():
            self._fail(
                str(root), root, f"models folder {root} does not exist (set BERT_MODELS_DIR)"
            )
            return []
        found = sorted(
            (p.name, p) for p in root.iterdir() if p.is_dir() and (p / MANIFEST_FILE).is_file()
        )
        wanted = self.settings.models
        if wanted:
            names = {n for n, _ in found}
            for name in wanted:
                if name not in names:
                    self._fail(name, root / name, f"no bundle {name!r} in {root}")
            found = [(n, p) for n, p in found if n in wanted]
        elif not found:
            self._fail(
                str(root), root, f"no model bundles in {root} (run `python -m training export`)"
            )
        return found

    def load(self, folder: str, path: Path) -> LoadedModel | None:
        """Verify and load one bundle (blocking); on failure record it and return None."""
        t0 = time.perf_counter()
        try:
            model = self._load(path)
        except (BundleError, ValueError, OSError, RuntimeError) as exc:
            self._fail(folder, path, " ".join(str(exc).split()))
            return None
        except Exception as exc:  # onnxruntime raises its own exception types
            self._fail(folder, path, f"{type(exc).__name__}: {' '.join(str(exc).split())}")
            return None
        if model.name in self.models:
            other = self.models[model.name].bundle.path
            self._fail(folder, path, f"bundle name {model.name!r} is already served from {other}")
            return None
        model.load_seconds = time.perf_counter() - t0
        self.models[model.name] = model
        rerun = model.rerun
        log.info(
            "model %s (%s) loaded from %s: variant %s on %s%s in %.2f s",
            model.name,
            model.task,
            path,
            model.bundle.variant.precision,
            model.backend.provider,
            ""
            if rerun is None
            else f", answers within {rerun.spec.max_margin:.3g} of another rerun in "
            f"{rerun.spec.variant}",
            model.load_seconds,
        )
        return model

    def _load(self, path: Path) -> LoadedModel:
        s = self.settings
        manifest = read_manifest(path)
        s.check_max_seq_len(manifest.name, manifest.max_seq_length)
        variant = None if s.variant == "auto" else s.variant
        bundle = load_bundle(path, variant=variant, providers=[self.provider])
        backend = self._session(bundle)
        if backend.provider != self.provider:
            # The CUDA provider could not start (driver, libraries): serve on the CPU with the
            # variant meant for it rather than not at all.
            log.warning(
                "model %s: %s unavailable, falling back to %s", bundle.name, self.provider, CPU
            )
            if variant is None:
                bundle = load_bundle(path, providers=[CPU], verify=False)
            backend = self._session(bundle, CPU)
        task_model = self.make_task_model(
            bundle, doc_stride=s.qa_doc_stride, max_query_length=s.qa_max_query_length
        )
        backend.set_split(task_model.split)
        model = LoadedModel(bundle, task_model, backend, 0.0, rerun=self._rerun(bundle, task_model))
        if s.warmup:
            warm_up(model, s)
        return model

    def _rerun(self, bundle: Bundle, task_model: Any) -> Rerun | None:
        """The rerun graph of a cascade variant, on the CPU as the variant itself."""
        again, spec = bundle.rerun, bundle.variant.rerun
        if again is None or spec is None:
            return None
        backend = OnnxBackend(
            bundle.path / again.file, CPU, intra_op_threads=self.settings.inference_threads
        )
        backend.set_split(task_model.split)
        return Rerun(spec, backend)

    def _session(self, bundle: Bundle, provider: str | None = None) -> OnnxBackend | Seq2SeqBackend:
        gen = bundle.manifest.generation
        if gen is not None and bundle.decoder_file is not None:  # translation
            model = Seq2Seq(
                bundle.model_file,
                bundle.decoder_file,
                layers=gen.num_layers,
                heads=gen.num_heads,
                head_dim=gen.head_dim,
                provider=provider or self.provider,
                # The continuous decoder runs every sequence's step in one call: all cores.
                intra_op_threads=self.settings.intra_op_threads or available_cores(),
            )
            return Seq2SeqBackend(
                model,
                start=gen.decoder_start_token_id,
                eos=gen.eos_token_id,
                length_penalty=gen.length_penalty,
            )
        return OnnxBackend(
            bundle.model_file,
            provider or self.provider,
            intra_op_threads=self.settings.inference_threads,
        )

    def _fail(self, name: str, path: Path, reason: str) -> None:
        self.failures[name] = Failure(name, str(path), reason)
        log.error("model %s refused: %s", name, reason)
