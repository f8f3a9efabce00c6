"""Peer servers for the load benchmark: `infinity-emb`_ serving a local BERT sequence classifier.

Torch-free glue: :func:`infinity` returns a :class:`Peer` (command without ``--port``, readiness
and classify paths, request body and response parser, environment) for
``benchmarks/serve_load.py``. Infinity lives in its own virtual environment, since it needs
``numpy<2`` and a transformers 4.x; torch stays at the CPU build on disk::

    python3.11 -m venv /tmp/peer-venv
    /tmp/peer-venv/bin/pip install torch==2.13.0          # the CPU wheel on disk
    echo 'torch==2.13.0' > /tmp/peer/constraints.txt       # so nothing pulls a CUDA torch
    /tmp/peer-venv/bin/pip install -c /tmp/peer/constraints.txt \\
        'infinity-emb[server,optimum,torch]==0.0.78'

That resolved to infinity-emb 0.0.78, torch 2.13.0+cpu, transformers 4.57.6, optimum 2.1.0 +
optimum-onnx 0.1.0, onnxruntime 1.32.0, sentence-transformers 3.4.1, numpy 1.26.4, fastapi
0.165.0, uvicorn 0.32.1 (``[all]`` would add vision/audio/ct2 packages: not needed). optimum 1.x
does not work beside torch 2.13 (its ONNX exporter fails to import: ``cannot import name
'_attention_scale' from 'torch.onnx.symbolic_opset14'``; it also needs transformers<4.49 for
``optimum.bettertransformer``, which infinity imports when optimum 1.x is present, and
``pyarrow<20`` for numpy 1.x).

What was found (infinity 0.0.78, on CPU):

* A ``config.json`` whose architecture ends in ``SequenceClassification`` with >= 2 labels makes
  infinity serve ``POST /classify``: body ``{"input": [text, ...]}`` (``"model"`` may be left out
  with one model loaded; ``"raw_scores": true`` changes nothing here), answer
  ``{"object": "classify", "data": [[{"score": 0.52, "label": "1"}, {"score": 0.48, "label":
  "0"}], ...], "model": ..., "usage": {...}, "id": ..., "created": ...}``: one list per input,
  every label with its softmax score, best first; labels are the checkpoint's ``id2label``.
* ``GET /health`` answers 200 only once the model is loaded (uvicorn binds after startup).
* ``--engine torch``: transformers ``pipeline("text-classification")``, fp32, truncation on.
  ``--engine optimum`` never exports: it wants ``*.onnx`` in the folder (``ValueError: No onnx
  files found for DIR and revision None``). With an ONNX file but no ``*_optimized.onnx`` beside
  it, a local absolute path fails: infinity passes the ONNX file's full path as ``file_name`` and
  optimum 2.x matches it against bare file names (``FileNotFoundError: Could not find any ONNX
  files with target file name DIR/model.onnx, only found: [PosixPath('model.onnx')]``); its own
  optimisation step also fails on optimum 2.x (``OptimizationConfig.__init__() got an
  unexpected keyword argument 'optimize_with_onnxruntime_only'``, a warning, then unoptimised).
  When ``DIR/*_optimized.onnx`` exists, infinity loads it directly (its own cache of the
  optimised graph), which sidesteps both: :func:`export_onnx` therefore exports with optimum and
  writes ``model_optimized.onnx`` with the same ``OptimizationConfig`` infinity uses on CPU
  (level 99, no fp16).
* The optimum pipeline does not truncate, so the default warm-up (512 tokens + 2 specials) fails
  (``Attempting to broadcast an axis`` in ``/bert/embeddings/Add_1``): ``--no-model-warmup`` is
  needed there, and is used for torch too (its warm-up figures are logged only; 70 s on 2 cores).
* Threads: no flag. onnxruntime's intra-op pool defaults to the core count and ignores
  ``OMP_NUM_THREADS`` and ``taskset``; torch honours ``OMP_NUM_THREADS``. The command therefore
  starts infinity's CLI through a few lines that set ``SessionOptions.intra_op_num_threads`` and
  ``torch.set_num_threads`` to ``threads`` (``OMP_NUM_THREADS`` and ``RAYON_NUM_THREADS``, the
  tokenizer's pool, are set in ``env`` too).
* Env: ``DO_NOT_TRACK=1`` / ``INFINITY_ANONYMOUS_USAGE_STATS=0`` turn off its telemetry (posthog),
  ``HF_HUB_OFFLINE=1`` keeps the hub out, ``INFINITY_HOME`` moves the ``.infinity_cache`` folder
  it creates at start (else in the working directory). ``--no-vector-disk-cache`` is explicit.

.. _infinity-emb: https://github.com/michaelfeil/infinity
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PEER_PYTHON = Path("/tmp/peer-venv/bin/python")

# ``python -c _LAUNCH THREADS v2 ...``: thread limits that infinity has no flag for, then its CLI.
_LAUNCH = """\
import sys
n = int(sys.argv.pop(1))
import onnxruntime as ort
import torch
torch.set_num_threads(n)
class _Session(ort.InferenceSession):
    def __init__(self, path, sess_options=None, *args, **kwargs):
        opts = sess_options if sess_options is not None else ort.SessionOptions()
        opts.intra_op_num_threads = n
        super().__init__(path, opts, *args, **kwargs)
ort.InferenceSession = _Session
sys.argv[0] = "infinity_emb"
from infinity_emb.cli import cli
cli()
"""

# ``python -c _EXPORT SRC OUT``: optimum's ONNX export, then infinity's CPU optimisation.
_EXPORT = """\
import sys
src, out = sys.argv[1:3]
from optimum.exporters.onnx import main_export
from optimum.onnxruntime import ORTModelForSequenceClassification, ORTOptimizer
from optimum.onnxruntime.configuration import OptimizationConfig
main_export(src, output=out, task="text-classification", local_files_only=True)
model = ORTModelForSequenceClassification.from_pretrained(out, file_name="model.onnx")
config = OptimizationConfig(optimization_level=99, optimize_for_gpu=False, fp16=False)
ORTOptimizer.from_pretrained(model).optimize(config, save_dir=out, one_external_file=True)
"""


@dataclass(frozen=True)
class Peer:
    """A server to benchmark: ``[*command, "--port", N]``, ready when GET ``ready_path`` is 200."""

    name: str
    command: list[str]
    ready_path: str
    classify_path: str
    body: Callable[[str], dict[str, Any]]
    parse: Callable[[Any], str]
    env: dict[str, str] = field(default_factory=dict)


def _infinity_body(text: str) -> dict[str, Any]:
    return {"input": [text]}


def _infinity_parse(response: Any) -> str:
    scores: list[dict[str, Any]] = response["data"][0]
    return str(max(scores, key=lambda s: float(s["score"]))["label"])


def export_onnx(checkpoint: Path, out: Path, python: Path = PEER_PYTHON) -> Path:
    """Write ``model.onnx`` + ``model_optimized.onnx`` (+ config, tokenizer) to ``out`` once."""
    if not (out / "model_optimized.onnx").is_file():
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"}
        cmd = [str(python), "-c", _EXPORT, str(checkpoint), str(out)]
        subprocess.run(cmd, check=True, env=env, cwd=tempfile.gettempdir())
    return out


def infinity(
    checkpoint: Path,
    engine: str,
    batch_size: int,
    threads: int,
    python: Path = PEER_PYTHON,
) -> Peer:
    """infinity-emb on CPU serving ``checkpoint`` (a BertForSequenceClassification folder).

    ``engine``: ``"torch"`` (the checkpoint as it is) or ``"optimum"`` (onnxruntime; exports the
    checkpoint once to ``<checkpoint>-infinity-onnx`` beside it, about 25 s on 2 cores).
    """
    checkpoint = checkpoint.resolve()
    if engine == "optimum":
        model = export_onnx(checkpoint, checkpoint.with_name(checkpoint.name + "-infinity-onnx"))
    elif engine == "torch":
        model = checkpoint
    else:
        raise ValueError(f"engine must be 'torch' or 'optimum', not {engine!r}")
    command = [
        str(python), "-c", _LAUNCH, str(threads), "v2",
        "--model-id", str(model), "--engine", engine, "--device", "cpu",
        "--batch-size", str(batch_size), "--no-model-warmup", "--no-vector-disk-cache",
        "--host", "127.0.0.1", "--log-level", "warning",
    ]  # fmt: skip
    env = {
        "DO_NOT_TRACK": "1",
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "HF_HUB_OFFLINE": "1",
        "INFINITY_HOME": str(Path(tempfile.gettempdir()) / "infinity-home"),
        "OMP_NUM_THREADS": str(threads),
        "RAYON_NUM_THREADS": str(threads),
    }
    return Peer(
        name=f"infinity-{engine}",
        command=command,
        ready_path="/health",
        classify_path="/classify",
        body=_infinity_body,
        parse=_infinity_parse,
        env=env,
    )
