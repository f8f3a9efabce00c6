"""int8 graph rewriting on a single matrix product, against numpy's fp32 result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

onnx = pytest.importorskip("onnx")


def _product(path: Path, w: np.ndarray) -> None:
    """y = x @ w, x of shape (batch, tokens, channels): the shape of a BERT layer's products."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="/encoder/layer.0/output/MatMul")],
        "product",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "t", w.shape[1]])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))


def _activations(rng: np.random.Generator, n: int, channels: int) -> np.ndarray:
    """Activations whose channels 3 and 11 carry outliers, as BERT's FFN inputs do."""
    x = rng.normal(0, 1, (n, 16, channels)).astype(np.float32)
    x[..., 3] *= 60.0
    x[..., 11] *= 25.0
    return x


def test_smoothing_moves_activation_outliers_into_the_weights(tmp_path: Path) -> None:
    """SmoothQuant's x / c @ (c * w) is the same product: per-token int8 with it is closer to
    fp32 than without it when a few channels carry outliers, and stays batch-independent."""
    from training.export import quantize_int8

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.05, (64, 32)).astype(np.float32)
    fp32 = tmp_path / "fp32.onnx"
    _product(fp32, w)
    calibration = [{"x": _activations(rng, 4, 64)} for _ in range(4)]
    x = _activations(rng, 8, 64)
    exact = x @ w
    errors, outputs = {}, {}
    for alpha in (0.0, 0.5):
        out = tmp_path / f"int8-{alpha}.onnx"
        account = quantize_int8(
            fp32, out, weight_type="s8", exclude=[], calibration=calibration, smooth_alpha=alpha
        )
        assert account["nodes"] == 1 and account.get("smooth_alpha", 0.0) == alpha
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        outputs[alpha] = y = session.run(None, {"x": x})[0]
        errors[alpha] = float(np.abs(y - exact).mean() / np.abs(exact).mean())
        alone = session.run(None, {"x": x[:1]})[0]
        assert np.array_equal(alone, y[:1]), "a row's answer does not depend on its batch"
    assert errors[0.5] < 0.5 * errors[0.0], errors
    assert errors[0.5] < 0.01, errors


def test_smoothing_needs_calibration(tmp_path: Path) -> None:
    from training.export import quantize_int8

    fp32 = tmp_path / "fp32.onnx"
    _product(fp32, np.ones((8, 4), np.float32))
    with pytest.raises(ValueError, match="calibration"):
        quantize_int8(fp32, tmp_path / "int8.onnx", smooth_alpha=0.5)
