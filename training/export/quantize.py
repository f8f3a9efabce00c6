"""int8 graphs for the CPU provider: one entry point, three methods.

* ``per-token`` (the default): int8 weights, one scale per output channel; at run time every
  token's activation vector gets its own scale (symmetric, max |x| / 127), written with standard
  ONNX ops and onnxruntime's ``MatMulIntegerToFloat``. A row's answer depends on nothing but the
  row: the same logits whatever else is in its batch and however much padding it has, and finer
  scales than one per tensor. The fused ``Attention`` keeps its query/key/value projection in
  fp32 (its kernel takes one input scale per tensor). With ``smooth_alpha`` and calibration
  inputs, SmoothQuant's per-channel factors first move the outlier channels of each product's
  input into its weights (``x / c @ (c * w)``: an elementwise ``Mul`` before the product); a
  method ``benchmarks/int8_methods.py`` measures, not the default (README: int8 methods).
* ``dynamic``: onnxruntime's ``quantize_dynamic`` (``MatMul`` and ``Attention``): activations
  get one scale per tensor at run time, from the whole padded batch, so a row's logits move
  with its batch-mates (measured: up to 0.36 on a MiniLM SST-2 classifier).
* ``static``: onnxruntime's ``quantize_static`` in QDQ form, activation scales fixed from
  calibration inputs (percentile by default); batch-independent, but a scale fixed in advance
  clips the activation outliers BERT's layers have.

Either way matrix products only: int8 embedding tables save memory but no time, cost accuracy,
and break on the MLM head's tied embeddings. ``exclude`` keeps named nodes in fp32 (the task
head by default for ``per-token``: :func:`head_nodes`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

Method = Literal["per-token", "dynamic", "static"]
METHODS: tuple[Method, ...] = ("per-token", "dynamic", "static")
Calibration = Literal["percentile", "entropy", "minmax"]

INT8_OP_TYPES = ["MatMul", "Attention"]  # what ``dynamic`` quantises
ENCODER_LAYER = "/encoder/layer"  # TorchScript names every encoder node under this scope


@contextlib.contextmanager
def quiet_onnxruntime_tools() -> Iterator[None]:
    """onnxruntime's optimizer and quantizer log every node (and advice) through the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def cpu_has_vnni() -> bool:
    """Whether this CPU multiplies u8 x s8 without int16 saturation (VNNI or AMX)."""
    from training.engine import cpu_has

    return cpu_has("avx512_vnni", "avx_vnni", "amx_int8")


def resolve_weight_type(weight_type: str) -> str:
    """s8 or u8; ``auto`` is s8 where this CPU has VNNI (on AVX2 alone onnxruntime's u8 x s8
    kernel sums pairs in int16 and saturates; u8 weights take a kernel that does not)."""
    if weight_type == "auto":
        return "s8" if cpu_has_vnni() else "u8"
    return weight_type


def is_int8_op(op_type: str) -> bool:
    """Whether ``op_type`` is one of the quantised ops the methods write (QAttention,
    DynamicQuantizeMatMul, MatMulIntegerToFloat, QuantizeLinear, ...)."""
    return op_type[0] == "Q" or "Integer" in op_type or op_type.startswith("DynamicQuantize")


def head_nodes(model: Any) -> list[str]:
    """Names of the ``MatMul`` nodes outside the encoder layers: the pooler and the task head
    (a small share of the work, and where a rounding error lands on the answer directly)."""
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and ENCODER_LAYER not in n.name and n.name
    ]


def sensitive_nodes(
    fp32: Path,
    feeds: Sequence[dict[str, np.ndarray]],
    count: int,
    work: Path,
    ops: Sequence[str] = ("MatMul", "Attention"),
    within: str = "",
) -> list[str]:
    """The ``count`` matrix products whose dynamic int8, alone, moves the first output most on
    ``feeds`` (mean |difference|): a sensitivity pass, one quantised graph per product. On the
    SQuAD MiniLM fine-tune it finds the FFN products of the first layers, where keeping 4 in
    fp32 moves answer agreement from 93.6 to 96.7 % (benchmarks/int8_methods.py). Ranked: the
    nodes of the types ``ops`` whose names hold ``within`` (what the int8 method quantises)."""
    import onnx
    import onnxruntime as ort

    if count <= 0:
        return []
    graph = onnx.load(str(fp32)).graph
    names = [n.name for n in graph.node if n.op_type in ops and within in n.name]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3

    def outputs(path: Path) -> list[np.ndarray]:
        s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return [np.asarray(s.run(None, f)[0]) for f in feeds]

    ref = outputs(fp32)
    score = {}
    one = work / "sensitivity.onnx"
    for name in names:
        quantize_int8(fp32, one, method="dynamic", exclude=[n for n in names if n != name])
        got = outputs(one)
        score[name] = float(np.mean([np.abs(a - b).mean() for a, b in zip(ref, got, strict=True)]))
    one.unlink(missing_ok=True)
    return sorted(score, key=score.__getitem__, reverse=True)[:count]


def quantize_int8(
    fp32: Path,
    out: Path,
    per_channel: bool = True,
    reduce_range: bool = False,
    weight_type: str = "auto",
    *,
    method: Method = "per-token",
    exclude: Sequence[str] | None = None,
    keep: Sequence[str] = (),
    calibration: Iterable[dict[str, np.ndarray]] | None = None,
    calibrate_method: Calibration = "percentile",
    smooth_alpha: float = 0.0,
) -> dict[str, Any]:
    """Write the int8 graph of ``fp32`` to ``out``; returns the manifest's account of it.

    ``exclude``: node names kept in fp32 (default: the task head for ``per-token``, none for the
    others); ``keep``: more kept besides (e.g. :func:`sensitive_nodes`); ``calibration``: feeds
    for ``static``.
    """
    import onnx

    wtype = resolve_weight_type(weight_type)
    model = _untie_initializers(onnx.load(str(fp32)))
    if method == "per-token":
        skip = [*(head_nodes(model) if exclude is None else exclude), *keep]
        smooth = None
        if smooth_alpha:
            if calibration is None:
                raise ValueError("smoothing needs calibration inputs")
            smooth = smoothing_factors(model, fp32, calibration, smooth_alpha, skip)
        count = per_token(model, wtype, skip, reduce_range, smooth)
        onnx.save(model, str(out))
        return {
            "method": method,
            "weight_type": "QInt8" if wtype == "s8" else "QUInt8",
            "op_types": "MatMul",
            "per_channel": True,
            "reduce_range": reduce_range,
            "nodes": count,
            "excluded": len(skip),
            **({"smooth_alpha": smooth_alpha} if smooth_alpha else {}),
        }
    exclude = [*(exclude or []), *keep]
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    qtype = QuantType.QInt8 if wtype == "s8" else QuantType.QUInt8
    # Shape inference cannot type the outputs of fused com.microsoft ops.
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    with quiet_onnxruntime_tools():
        if method == "dynamic":
            quantize_dynamic(
                model,
                str(out),
                op_types_to_quantize=INT8_OP_TYPES,
                per_channel=per_channel,
                reduce_range=reduce_range,
                weight_type=qtype,
                nodes_to_exclude=list(exclude or []),
                extra_options=extra,
            )
        else:
            if calibration is None:
                raise ValueError("static int8 needs calibration inputs")
            # The calibrator picks the tensors to measure by their inferred types; only the
            # symbolic shape inference types the outputs of fused com.microsoft ops.
            from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

            model = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
            calibrate = {
                "percentile": CalibrationMethod.Percentile,
                "entropy": CalibrationMethod.Entropy,
                "minmax": CalibrationMethod.MinMax,
            }[calibrate_method]
            quantize_static(
                model,
                str(out),
                _Reader(calibration),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["MatMul"],
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=qtype,
                nodes_to_exclude=list(exclude or []),
                calibrate_method=calibrate,
                extra_options=extra | {"CalibPercentile": 99.99},
            )
    return {
        "method": method,
        "weight_type": qtype.name,
        "op_types": ",".join(INT8_OP_TYPES if method == "dynamic" else ["MatMul"]),
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        **({"calibration": calibrate_method} if method == "static" else {}),
        **({"excluded": len(exclude)} if exclude else {}),
    }


class _Reader:
    """onnxruntime's ``CalibrationDataReader`` over an iterable of feeds."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def per_token(
    model: Any,
    weight_type: str,
    exclude: Sequence[str] = (),
    reduce_range: bool = False,
    smooth: dict[str, np.ndarray] | None = None,
) -> int:
    """Rewrite, in place, every ``MatMul`` of an activation by a 2-D weight (except ``exclude``)
    as per-token int8; returns how many were rewritten.

    Per token ``s = max(|x|, eps) / 127``, ``q = round(x / s) + 128`` (uint8, zero point 128:
    symmetric, and the u8 activation type every x86 kernel takes); weights per output channel,
    asymmetric u8 or symmetric s8 (``weight_type``); ``MatMulIntegerToFloat`` gives
    ``(q - 128) @ (w - zp) * w_scale`` in float, times ``s`` per token.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    weights = {t.name: t for t in graph.initializer if len(t.dims) == 2}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    consts: dict[str, np.ndarray] = {
        "pt/127": np.array(127.0, np.float32),
        "pt/eps": np.array(1e-12, np.float32),
        "pt/128": np.array(128.0, np.float32),
        "pt/zp128": np.array(128, np.uint8),
        "pt/one": np.array(1.0, np.float32),
    }
    if opset >= 18:  # ReduceMax takes its axes as an input
        consts["pt/last"] = np.array([-1], np.int64)
    skip = set(exclude)
    nodes: list[Any] = []
    used: set[str] = set()
    count = 0
    for node in graph.node:
        w = node.input[1] if node.op_type == "MatMul" else ""
        if w not in weights or node.name in skip:
            nodes.append(node)
            continue
        count += 1
        p = f"pt{count}"
        wf = numpy_helper.to_array(weights[w])
        x, y = node.input[0], node.output[0]
        factors = (smooth or {}).get(node.name)
        if factors is not None:  # x / c @ (c * w): the activation's outlier channels tamed
            wf = wf * factors[:, None]
            graph.initializer.append(
                numpy_helper.from_array((1.0 / factors).astype(np.float32), f"{p}/inv_c")
            )
            nodes.append(helper.make_node("Mul", [x, f"{p}/inv_c"], [f"{p}/xc"]))
            x = f"{p}/xc"
        qw, scale, zero = _quantize_columns(wf, weight_type, reduce_range)
        graph.initializer.extend(
            [
                numpy_helper.from_array(qw, f"{p}/w"),
                numpy_helper.from_array(scale, f"{p}/w_scale"),
                numpy_helper.from_array(zero, f"{p}/w_zero"),
            ]
        )
        reduce = (
            helper.make_node("ReduceMax", [f"{p}/abs", "pt/last"], [f"{p}/max"], keepdims=1)
            if opset >= 18
            else helper.make_node("ReduceMax", [f"{p}/abs"], [f"{p}/max"], axes=[-1], keepdims=1)
        )
        nodes += [
            helper.make_node("Abs", [x], [f"{p}/abs"]),
            reduce,
            helper.make_node("Max", [f"{p}/max", "pt/eps"], [f"{p}/max1"]),
            helper.make_node("Div", [f"{p}/max1", "pt/127"], [f"{p}/s"]),
            helper.make_node("Div", [x, f"{p}/s"], [f"{p}/xs"]),
            helper.make_node("Round", [f"{p}/xs"], [f"{p}/xr"]),
            helper.make_node("Add", [f"{p}/xr", "pt/128"], [f"{p}/xa"]),
            helper.make_node("Cast", [f"{p}/xa"], [f"{p}/q"], to=TensorProto.UINT8),
            helper.make_node(
                "MatMulIntegerToFloat",
                [f"{p}/q", f"{p}/w", "pt/one", f"{p}/w_scale", "pt/zp128", f"{p}/w_zero"],
                [f"{p}/y"],
                domain="com.microsoft",
                name=f"{node.name}/per_token",
            ),
            helper.make_node("Mul", [f"{p}/y", f"{p}/s"], [y], name=f"{node.name}/scale"),
        ]
        used.add(w)
    if not count:
        return 0
    still = {i for n in nodes for i in n.input}
    kept = [t for t in graph.initializer if t.name not in used or t.name in still]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return count


def smoothing_factors(
    model: Any,
    fp32: Path,
    calibration: Iterable[dict[str, np.ndarray]],
    alpha: float,
    exclude: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """SmoothQuant's per-channel factors (Xiao et al. 2023) for every product ``per_token``
    rewrites: ``c_j = max|x_j|^alpha / max|w_j|^(1 - alpha)`` over the calibration inputs'
    real tokens, so that ``x / c`` and ``c * w`` share the outliers of ``x``'s channels."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    weights = {t.name: t for t in model.graph.initializer if len(t.dims) == 2}
    skip = set(exclude)
    products = {
        n.name: (n.input[0], n.input[1])
        for n in model.graph.node
        if n.op_type == "MatMul" and n.input[1] in weights and n.name not in skip
    }
    probe = onnx.load(str(fp32))
    inputs = sorted({x for x, _ in products.values()})
    probe.graph.output.extend(onnx.ValueInfoProto(name=x) for x in inputs)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    top: dict[str, np.ndarray] = {}
    for feed in calibration:
        mask = feed.get("attention_mask")
        for x, value in zip(inputs, session.run(inputs, feed), strict=True):
            if mask is not None and value.ndim == 3 and value.shape[:2] == mask.shape:
                value = value[mask.astype(bool)]  # real tokens only
            v = np.abs(value)
            m = v.reshape(-1, v.shape[-1]).max(axis=0)
            top[x] = np.maximum(top[x], m) if x in top else m
    factors = {}
    for name, (x, w) in products.items():
        wmax = np.abs(numpy_helper.to_array(weights[w])).max(axis=1)
        c = np.power(np.maximum(top[x], 1e-5), alpha) / np.power(np.maximum(wmax, 1e-5), 1 - alpha)
        factors[name] = np.clip(c, 1e-5, 1e5).astype(np.float32)
    return factors


def _quantize_columns(
    w: np.ndarray, weight_type: str, reduce_range: bool = False
) -> tuple[np.ndarray, ...]:
    """(int8 weights, scale, zero point) per column of ``w`` (in, out): symmetric s8 (7-bit,
    -63..63, with ``reduce_range``), or asymmetric u8 over each column's range (zero included,
    so 0 stays exact)."""
    w = w.astype(np.float32)
    if weight_type == "s8":
        top = 63.0 if reduce_range else 127.0
        scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / top
        return (
            np.clip(np.round(w / scale), -top, top).astype(np.int8),
            scale.astype(np.float32),
            np.zeros(w.shape[1], np.int8),
        )
    lo, hi = np.minimum(w.min(axis=0), 0.0), np.maximum(w.max(axis=0), 0.0)
    scale = np.maximum(hi - lo, 1e-12) / 255.0
    zero = np.clip(np.round(-lo / scale), 0, 255)
    q = np.clip(np.round(w / scale) + zero, 0, 255)
    return q.astype(np.uint8), scale.astype(np.float32), zero.astype(np.uint8)


def _untie_initializers(model: Any) -> Any:
    """Give every consumer of a shared weight matrix its own copy.

    The MLM decoder shares the word-embedding table with EmbedLayerNormalization; the quantiser
    rewrites the table in place for the decoder (transposed, int8), which breaks the embedding.
    """
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer if len(t.dims) >= 2}
    seen: dict[str, int] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name not in inits:
                continue
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                copy = numpy_helper.from_array(
                    np.asarray(numpy_helper.to_array(inits[name])), f"{name}.copy{seen[name] - 1}"
                )
                model.graph.initializer.append(copy)
                node.input[i] = copy.name
    return model
