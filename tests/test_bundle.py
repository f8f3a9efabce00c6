"""The bundle schema and reader (bundle/manifest.py), on hand-made bundles: no torch, no ONNX."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import bundle.manifest as B

REPO = Path(__file__).resolve().parents[1]
INPUTS = [B.TensorSpec(name=n, dtype="int64", shape=["batch", "sequence"]) for n in B.INPUT_NAMES]


def _parity(status: str = "passed") -> B.ParityReport:
    return B.ParityReport(
        status=status,  # type: ignore[arg-type]
        provider="CPUExecutionProvider",
        examples=8,
        data="generated",
        max_abs_diff=1e-6,
        agreement=1.0,
        thresholds={"max_abs_diff": 1e-4},
    )


def make_bundle(folder: Path, variants: dict[str, str] | None = None, **overrides: Any) -> Path:
    """A schema-valid bundle whose 'graphs' are a few bytes (the reader never opens them)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text('{"version": "1.0"}', encoding="utf-8")
    specs = {}
    for name, status in (variants or {"fp32": "passed", "int8": "passed"}).items():
        file = f"model.{name}.onnx"
        (folder / file).write_bytes(f"graph {name}".encode())
        entry = B.file_entry(folder, file)
        specs[name] = B.VariantSpec(
            file=file,
            size_bytes=entry.size_bytes,
            sha256=entry.sha256,
            precision=name,  # type: ignore[arg-type]
            provider="CUDAExecutionProvider" if name == "fp16" else "CPUExecutionProvider",
            opset=17,
            inputs=INPUTS,
            outputs=[B.TensorSpec(name="logits", dtype="float32", shape=["batch", 2])],
            parity=_parity(status),
        )
    fields: dict[str, Any] = {
        "name": "tiny",
        "task": "classification",
        "labels": ["neg", "pos"],
        "max_seq_length": 64,
        "tokenizer": B.TokenizerSpec(
            config_file=None,
            lowercase=True,
            vocab_size=30,
            special_tokens={"cls": "[CLS]", "sep": "[SEP]", "pad": "[PAD]"},
            special_token_ids={"cls": 2, "sep": 3, "pad": 0},
            max_length=64,
            truncation="longest_first",
            text_pair=False,
        ),
        "variants": specs,
        "default_variant": "fp32" if "fp32" in specs else next(iter(specs)),
        "files": [B.file_entry(folder, "tokenizer.json")],
        "source": B.SourceInfo(
            checkpoint="/ckpt",
            architecture="BertForSequenceClassification",
            hidden_size=32,
            num_layers=2,
            num_heads=2,
        ),
        "versions": {"python": "3.11"},
        "created_at": datetime.now(UTC),
    }
    fields.update(overrides)
    fill = fields.get("fill_mask")
    names = B.output_names(fields["task"], fill.output if fill is not None else None)
    outputs = [B.TensorSpec(name=n, dtype="float32", shape=["batch", 2]) for n in names]
    fields["variants"] = {k: v.model_copy(update={"outputs": outputs}) for k, v in specs.items()}
    B.write_manifest(B.Manifest(**fields), folder)
    return folder


def _edit_manifest(folder: Path, edit: Any) -> None:
    path = folder / B.MANIFEST_FILE
    raw = json.loads(path.read_text(encoding="utf-8"))
    edit(raw)
    path.write_text(json.dumps(raw), encoding="utf-8")


def test_round_trip(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "b")
    b = B.load_bundle(folder, variant="int8")
    assert b.name == "tiny" and b.task == "classification"
    assert b.variant.precision == "int8"
    assert b.model_file == folder / "model.int8.onnx"
    assert b.tokenizer_file.read_text(encoding="utf-8") == '{"version": "1.0"}'
    raw = json.loads((folder / B.MANIFEST_FILE).read_text(encoding="utf-8"))
    assert raw["schema_version"] == B.SCHEMA_VERSION
    assert B.Manifest.model_validate(raw) == b.manifest


def test_explicit_variant_and_unknown_variant(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "b")
    assert B.load_bundle(folder, variant="fp32").variant.file == "model.fp32.onnx"
    with pytest.raises(B.BundleError, match=r"has no variant 'fp16' \(it has fp32, int8\)"):
        B.load_bundle(folder, variant="fp16")


def test_pick_variant_prefers_checked_variants(tmp_path: Path) -> None:
    folder = make_bundle(
        tmp_path / "b", {"fp32": "passed", "int8": "passed", "fp16": "not_checked"}
    )
    m = B.read_manifest(folder)
    # fp16 exported where no GPU could check it is never picked automatically.
    assert B.pick_variant(m, ["CUDAExecutionProvider", "CPUExecutionProvider"]).precision == "fp32"
    # On a CPU int8 once it passed parity, where the CPU has int8 dot products; else fp32.
    assert B.pick_variant(m, ["CPUExecutionProvider"], fast_int8=True).precision == "int8"
    assert B.pick_variant(m, ["CPUExecutionProvider"], fast_int8=False).precision == "fp32"
    assert B.pick_variant(m, ["SomethingElse"]).precision == "fp32"  # the default variant
    auto = B.load_bundle(folder).variant.precision
    assert auto == ("int8" if B.fast_int8_cpu() else "fp32")


@pytest.mark.parametrize(
    ("flags", "fast"),
    [
        ("flags\t\t: fpu sse avx2 fma", False),
        ("flags\t\t: fpu avx2 avx512f avx512_vnni", True),
        ("flags\t\t: fpu avx2 avx_vnni", True),
        ("Features\t: fp asimd asimddp", True),
        ("processor : 0", True),  # no flags line: cannot tell, keep int8
    ],
)
def test_fast_int8_cpu_reads_the_dot_product_flags(tmp_path: Path, flags: str, fast: bool) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\n{flags}\n", encoding="utf-8")
    assert B.fast_int8_cpu(str(info)) is fast


@pytest.mark.parametrize("byte_offset", [0, -1])
def test_tampered_file_is_refused(tmp_path: Path, byte_offset: int) -> None:
    folder = make_bundle(tmp_path / "b")
    model = folder / "model.fp32.onnx"
    data = bytearray(model.read_bytes())
    data[byte_offset] ^= 0xFF  # same size, different content
    model.write_bytes(bytes(data))
    with pytest.raises(B.BundleError, match=r"model\.fp32\.onnx does not match its sha256") as err:
        # Every listed file is verified, not just the variant used.
        B.load_bundle(folder, variant="int8")
    assert "\n" not in str(err.value)


def test_truncated_and_missing_files_are_refused(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "b")
    (folder / "tokenizer.json").write_text("{}", encoding="utf-8")
    with pytest.raises(B.BundleError, match=r"tokenizer\.json has 2 bytes"):
        B.load_bundle(folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(B.BundleError, match=r"listed file tokenizer\.json is missing"):
        B.load_bundle(folder)
    # verify=False skips the file checks (a caller that verified once already)
    assert B.load_bundle(folder, verify=False).name == "tiny"


def test_unknown_schema_version(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "b")
    _edit_manifest(folder, lambda m: m.update(schema_version=99))
    with pytest.raises(B.BundleError, match="schema_version 99; this reader knows 1"):
        B.load_bundle(folder)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(surprise=1), "surprise: Extra inputs are not permitted"),
        (lambda m: m.update(task="summarization"), "task: Input should be"),
        (lambda m: m.update(labels=[]), "needs labels"),
        (lambda m: m.update(default_variant="fp16"), "default_variant 'fp16' is not among"),
        (lambda m: m["variants"]["fp32"].update(sha256="xyz"), "sha256: String should match"),
        (lambda m: m["variants"]["fp32"]["inputs"].pop(), "inputs must be input_ids"),
        (lambda m: m["variants"]["fp32"].update(file="../x.onnx"), "outside the bundle"),
        (lambda m: m["variants"]["fp32"]["outputs"][0].update(name="scores"), "must be logits"),
        (lambda m: m.update(qa=QA_WINDOWS), "qa applies to the qa task only"),
    ],
)
def test_invalid_manifest_is_one_line(tmp_path: Path, edit: Any, message: str) -> None:
    folder = make_bundle(tmp_path / "b")
    _edit_manifest(folder, edit)
    with pytest.raises(B.BundleError, match=message) as err:
        B.load_bundle(folder)
    assert "\n" not in str(err.value)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(B.BundleError, match="is not a folder"):
        B.load_bundle(tmp_path / "nowhere")
    with pytest.raises(B.BundleError, match=r"not a model bundle \(no manifest.json\)"):
        B.load_bundle(tmp_path)
    (tmp_path / B.MANIFEST_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(B.BundleError, match="not readable JSON"):
        B.load_bundle(tmp_path)


def test_fill_mask_needs_its_spec(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fill_mask is required"):
        make_bundle(tmp_path / "b", task="fill-mask", labels=[])
    spec = B.FillMaskSpec(output="topk", top_k=5, mask_token_id=4)
    folder = make_bundle(tmp_path / "c", task="fill-mask", labels=[], fill_mask=spec)
    assert B.load_bundle(folder).manifest.fill_mask == spec
    with pytest.raises(ValueError, match="top_k is required"):
        B.FillMaskSpec(output="topk", mask_token_id=4)


QA_WINDOWS = {"doc_stride": 16, "max_query_length": 8, "max_answer_length": 5}


def test_qa_windows_default_for_bundles_that_do_not_say(tmp_path: Path) -> None:
    old = B.load_bundle(make_bundle(tmp_path / "old", task="qa", labels=[]))
    assert old.manifest.qa is None and old.qa == B.QA_DEFAULTS
    spec = B.QASpec(**QA_WINDOWS)
    new = B.load_bundle(make_bundle(tmp_path / "new", task="qa", labels=[], qa=spec))
    assert new.qa == spec
    assert [t.name for t in new.variant.outputs] == ["start_logits", "end_logits"]


RERUN = {"variant": "fp32", "max_margin": 0.05, "share": 0.06}


def test_a_qa_cascade_names_the_variant_that_answers_again(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "qa", task="qa", labels=[])
    _edit_manifest(folder, lambda m: m["variants"]["int8"].update(rerun=RERUN))
    cascade = B.load_bundle(folder, variant="int8")
    assert cascade.variant.rerun == B.RerunSpec(**RERUN)
    assert cascade.rerun is not None and cascade.rerun.precision == "fp32"
    assert B.load_bundle(folder, variant="fp32").rerun is None


@pytest.mark.parametrize(
    ("task", "rerun", "message"),
    [
        ("classification", RERUN, "rerun applies to the qa task only"),
        ("qa", {**RERUN, "variant": "fp16"}, "reruns in 'fp16', which must be another variant"),
        ("qa", {**RERUN, "variant": "int8"}, "reruns in 'int8', which must be another variant"),
        ("qa", {**RERUN, "max_margin": -1}, "max_margin: Input should be greater than"),
        ("qa", {**RERUN, "share": 1.5}, "share: Input should be less than"),
    ],
)
def test_a_cascade_that_cannot_serve_is_refused(
    tmp_path: Path, task: str, rerun: dict[str, Any], message: str
) -> None:
    labels = ["neg", "pos"] if task == "classification" else []
    folder = make_bundle(tmp_path / "b", task=task, labels=labels)
    _edit_manifest(folder, lambda m: m["variants"]["int8"].update(rerun=rerun))
    with pytest.raises(B.BundleError, match=message):
        B.load_bundle(folder)


@pytest.mark.parametrize(
    ("length", "stride", "query", "expected"),
    [(384, 128, 64, (64, 128)), (64, 128, 64, (16, 22)), (64, 8, 4, (4, 8)), (8, 5, 64, (2, 1))],
)
def test_qa_window_sizes_keep_every_window_advancing(
    length: int, stride: int, query: int, expected: tuple[int, int]
) -> None:
    from bundle.qa import window_sizes

    got_query, got_stride = window_sizes(length, stride, query)
    assert (got_query, got_stride) == expected
    assert got_stride < length - got_query - 3  # each window reads new context


def test_reader_imports_neither_torch_nor_numpy(tmp_path: Path) -> None:
    folder = make_bundle(tmp_path / "b")
    code = (
        "import sys, bundle.manifest as b; b.load_bundle(sys.argv[1]); "
        "bad = [m for m in ('torch', 'transformers', 'training', 'numpy', 'onnxruntime') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(folder)], cwd=REPO, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
