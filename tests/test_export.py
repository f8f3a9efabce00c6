"""``python -m training export`` on tiny random BERTs of every task (hidden 32, 2 layers).

Tests assert behaviour, never speed. Random tiny models have near-ties between labels, so the
int8 gate is relaxed here; the fp32 gate keeps its real threshold (1e-4).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import onnxruntime as ort
import torch
import transformers
from tokenizers import Tokenizer

import bundle.manifest as B
from tests.helpers import ARCH, LABELS, RELAXED, TASK_OF, VOCAB, build_checkpoint, export
from training.export import (
    ExportConfig,
    Pred,
    cpu_has_vnni,
    cuda_available,
    eval_examples,
    make_plan,
)
from training.export.parity import Slice, parity
from training.export.parity_data import split_outputs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    return {kind: build_checkpoint(root / kind, kind) for kind in ARCH}


@pytest.fixture(scope="module")
def bundles(ckpts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One fp32+int8 bundle per task, exported once for the module."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for kind in (
        "classification",
        "multi-label",
        "qa",
        "token-classification",
        "fill-mask",
        "pretraining",
    ):
        rc = export(
            "--checkpoint",
            ckpts[kind],
            "--out",
            root / kind,
            "--max-steps",
            "24",
            "--variants",
            "fp32,int8",
            *RELAXED,
        )
        assert rc == 0, kind
        out[kind] = root / kind
    return out


def _feed(encodings: list[Any]) -> dict[str, np.ndarray]:
    longest = max(len(e.ids) for e in encodings)
    feed = {n: np.zeros((len(encodings), longest), np.int64) for n in B.INPUT_NAMES}
    for i, e in enumerate(encodings):
        feed["input_ids"][i, : len(e.ids)] = e.ids
        feed["attention_mask"][i, : len(e.ids)] = 1
        feed["token_type_ids"][i, : len(e.ids)] = e.type_ids
    return feed


@pytest.mark.parametrize(
    "kind",
    ["classification", "multi-label", "qa", "token-classification", "fill-mask", "pretraining"],
)
def test_every_task_exports_and_matches_torch(
    kind: str, ckpts: dict[str, Path], bundles: dict[str, Path]
) -> None:
    b = B.load_bundle(bundles[kind], variant="fp32")
    m = b.manifest
    task = TASK_OF.get(kind, kind)
    assert m.task == task
    assert m.multi_label == (kind == "multi-label")
    assert m.labels == (LABELS[kind] if task in ("classification", "token-classification") else [])
    assert set(m.variants) == {"fp32", "int8"}
    # The optimiser fused attention, embeddings+LayerNorm, residual+LayerNorm and GELU.
    fused = m.variants["fp32"].fused_ops
    assert fused["Attention"] == 2 and fused["EmbedLayerNormalization"] == 1
    assert fused["SkipLayerNormalization"] == 4 and fused["BiasGelu"] == 2
    # per-token int8: each layer's three dense products (attention output, FFN in and out); the
    # fused attention keeps its query/key/value projection in fp32; qa keeps the 4 products a
    # sensitivity pass finds worst quantised in fp32 as well
    int8 = m.variants["int8"]
    assert int8.quantization is not None
    kept = str(int8.quantization.get("kept_fp32", "")).split(",") if task == "qa" else []
    assert len(kept) == (4 if task == "qa" else 0)
    assert all("/encoder/layer" in k for k in kept)
    int8_ops = int8.fused_ops
    assert int8_ops.get("MatMulIntegerToFloat") == 6 - len(kept) and "QAttention" not in int8_ops
    fp32 = m.variants["fp32"].parity
    assert fp32.status == "passed" and fp32.data == "generated" and fp32.examples > 0
    assert fp32.max_abs_diff is not None and fp32.max_abs_diff <= 1e-4
    assert fp32.batch_max_abs_diff is not None and fp32.batch_max_abs_diff <= 1e-4
    assert fp32.agreement == 1.0
    assert m.variants["int8"].parity.status == "passed"

    # Independently of export's own parity code: the bundle's tokenizer and graph against torch.
    tok = Tokenizer.from_file(str(b.tokenizer_file))
    texts = ["the cat sat on the mat", "john ran to paris and london", "a big red car"]
    if task == "qa":
        encodings = tok.encode_batch([("who ran", t) for t in texts])
    else:
        encodings = tok.encode_batch(texts)
    feed = _feed(encodings)
    if task == "fill-mask":
        feed["input_ids"][:, 2] = VOCAB["[MASK]"]
    session = ort.InferenceSession(str(b.model_file), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names == [o.name for o in b.variant.outputs]
    got = dict(zip(names, session.run(None, feed), strict=True))
    model = getattr(transformers, ARCH[kind]).from_pretrained(str(ckpts[kind])).eval()
    with torch.no_grad():
        ref = model(**{k: torch.from_numpy(v) for k, v in feed.items()})
    real = feed["attention_mask"].astype(bool)
    if task == "classification":
        np.testing.assert_allclose(got["logits"], ref.logits.numpy(), atol=1e-4)
    elif task == "token-classification":
        np.testing.assert_allclose(got["logits"][real], ref.logits.numpy()[real], atol=1e-4)
    elif task == "qa":
        for name in ("start_logits", "end_logits"):
            np.testing.assert_allclose(got[name][real], getattr(ref, name).numpy()[real], atol=1e-4)
    else:
        logits = ref.logits if kind == "fill-mask" else ref.prediction_logits
        probs = logits[:, 2].softmax(-1)  # (batch, vocab) at the masks
        assert m.fill_mask is not None and m.fill_mask.output == "topk"
        np.testing.assert_array_equal(got["mask_positions"], [[i, 2] for i in range(len(texts))])
        scores, ids = probs.topk(m.fill_mask.top_k)
        np.testing.assert_array_equal(got["top_ids"][:, 0], ids[:, 0].numpy())
        np.testing.assert_allclose(got["top_scores"], scores.numpy(), atol=1e-5)


def test_manifest_records_tokenizer_source_and_versions(
    ckpts: dict[str, Path], bundles: dict[str, Path]
) -> None:
    m = B.load_bundle(bundles["qa"]).manifest
    assert m.tokenizer.lowercase and m.tokenizer.text_pair
    assert m.tokenizer.truncation == "only_second" and m.max_seq_length == 64
    assert m.tokenizer.special_token_ids["cls"] == VOCAB["[CLS]"]
    assert m.source.architecture == "BertForQuestionAnswering"
    assert m.source.checkpoint == str(ckpts["qa"].resolve())
    assert {"torch", "transformers", "onnxruntime-gpu"} & set(m.versions)
    assert [f.path for f in m.files] == ["tokenizer.json", "tokenizer_config.json"]
    saved = json.loads((bundles["qa"] / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved["truncation"]["max_length"] == 64  # serving gets the limit with the file
    # s8 weights where the exporting CPU has VNNI, u8 (no int16 saturation) where not
    assert m.variants["int8"].quantization == {
        "method": "per-token",
        "weight_type": "QInt8" if cpu_has_vnni() else "QUInt8",
        "op_types": "MatMul",
        "per_channel": True,
        "reduce_range": False,
        "nodes": 2,  # two layers' dense products, but the 4 a sensitivity pass keeps in fp32
        "excluded": 5,  # with the span head
        "kept_fp32": m.variants["int8"].quantization["kept_fp32"],
    }


def test_tampered_bundle_is_refused(bundles: dict[str, Path], tmp_path: Path) -> None:
    copy = Path(shutil.copytree(bundles["classification"], tmp_path / "b"))
    data = bytearray((copy / "model.int8.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "model.int8.onnx").write_bytes(bytes(data))
    with pytest.raises(B.BundleError, match=r"model\.int8\.onnx does not match its sha256"):
        B.load_bundle(copy)


def test_loading_a_bundle_imports_no_torch(bundles: dict[str, Path]) -> None:
    code = (
        "import sys; from bundle.manifest import load_bundle; b = load_bundle(sys.argv[1]); "
        "heavy = [m for m in ('torch', 'transformers', 'training') if m in sys.modules]; "
        "print(b.variant.precision, heavy); sys.exit(1 if heavy else 0)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(bundles["token-classification"])],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == "int8 []"


def test_parity_data_from_eval_files(ckpts: dict[str, Path], tmp_path: Path) -> None:
    tsv = tmp_path / "dev.tsv"
    tsv.write_text("sentence\tlabel\nthe cat sat\tpos\na big dog ran\tneg\nshe was red\tpos\n")
    squad = tmp_path / "dev.json"
    context = "john ran to paris and mary ran to london"
    squad.write_text(
        json.dumps(
            {
                "data": [
                    {
                        "paragraphs": [
                            {
                                "context": context,
                                "qas": [
                                    {
                                        "id": "q1",
                                        "question": "who ran to paris",
                                        "answers": [{"text": "john", "answer_start": 0}],
                                    },
                                    {
                                        "id": "q2",
                                        "question": "where did mary run",
                                        "answers": [{"text": "london", "answer_start": 33}],
                                    },
                                ],
                            }
                        ]
                    }
                ]
            }
        )
    )
    conll = tmp_path / "dev.conll"
    conll.write_text("-DOCSTART- O\n\njohn B-PER\nran O\nto O\nparis B-LOC\n\nmary B-PER\nsat O\n")
    cases = [("classification", tsv), ("qa", squad), ("token-classification", conll)]
    for kind, data in cases:
        out = tmp_path / f"b-{kind}"
        assert (
            export(
                "--checkpoint",
                ckpts[kind],
                "--out",
                out,
                "--eval",
                data,
                "--variants",
                "fp32,int8",
                *RELAXED,
            )
            == 0
        )
        for name, spec in B.load_bundle(out).manifest.variants.items():
            p = spec.parity
            assert p.data == data.name and p.examples == (2 if kind != "classification" else 3)
            assert p.metric is not None and p.reference_metric is not None, (kind, name)
            assert 0 <= p.metric <= 100
            if name == "fp32":
                assert p.metric == pytest.approx(p.reference_metric)


def _plan(ckpt: Path, tmp_path: Path) -> Any:
    return make_plan(ExportConfig(checkpoint=str(ckpt), out=str(tmp_path / "unused")))


def test_eval_table_is_read_by_the_classification_task(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _plan(ckpts["classification"], tmp_path)
    data = tmp_path / "dev.tsv"  # GLUE headers; a row without a label is skipped, as in finetune
    data.write_text("text_a\tlabel\nthe cat sat\tpos\nno label here\t\na big dog\tneg\n")
    examples, scorer = eval_examples(data, plan, 8, 0)
    assert scorer is None
    assert [int(e.gold) for e in examples] == [1, 0]  # neg, pos = the checkpoint's id2label
    assert [e.ids for e in examples] == [
        plan.tokenizer.encode(t).ids for t in ("the cat sat", "a big dog")
    ]
    data.write_text("sentence\tlabel\nthe cat sat\tpos\na big dog\tmaybe\n")
    assert export("--checkpoint", ckpts["classification"], "--out", tmp_path / "b", "--eval", data)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dev.tsv:3: label 'maybe' does not occur" in err[0], err


def test_eval_conll_iob1_is_read_by_the_token_task(ckpts: dict[str, Path], tmp_path: Path) -> None:
    plan = _plan(ckpts["token-classification"], tmp_path)  # O, B-PER, I-PER, B-LOC
    data = tmp_path / "dev.conll"
    data.write_text("-DOCSTART- -X- O\n\njohn NNP I-PER\nmary NNP I-PER\nran VBD O\n\n")
    (example,), _ = eval_examples(data, plan, 8, 0)
    # IOB1 -> IOB2: the entity's first word is B-PER; [CLS]/[SEP] carry no tag.
    assert example.gold.tolist() == [-100, 1, 2, 0, -100]


def test_eval_squad_v2_is_scored_with_official_f1(ckpts: dict[str, Path], tmp_path: Path) -> None:
    plan = _plan(ckpts["qa"], tmp_path)
    data = tmp_path / "dev.json"  # flat Hugging Face records; an empty answer list = impossible
    context = "john ran to paris and mary ran to london"
    qas = {"a": ("who ran", ["john"], [0]), "b": ("who sat", [], [])}
    records = [
        {"id": i, "question": q, "context": context, "answers": {"text": t, "answer_start": s}}
        for i, (q, t, s) in qas.items()
    ]
    data.write_text(json.dumps({"version": "v2.0", "data": records}))
    examples, decoding = eval_examples(data, plan, 8, 0)
    assert len(examples) == 2 and decoding is not None
    assert examples[0].ids == plan.tokenizer.encode("who ran", context).ids
    # Logits that point at [CLS] answer "no answer": right for b only, F1 50 over the two.
    null = [np.zeros((2, len(e.ids)), np.float32) for e in examples]
    for v in null:
        v[:, 0] = 10.0
    per_question = decoding.score([Pred(v, v.argmax(-1)) for v in null])
    assert per_question is not None and per_question.tolist() == [[0.0, 1.0], [1.0, 1.0]]
    out = tmp_path / "b"
    assert export("--checkpoint", ckpts["qa"], "--out", out, "--eval", data, *RELAXED) == 0
    parity = B.load_bundle(out).manifest.variants["int8"].parity
    assert parity.metric_name == "squad_f1" and parity.examples == 2


def test_qa_agreement_is_on_the_answers_served(ckpts: dict[str, Path], tmp_path: Path) -> None:
    """A variant whose window argmax moves onto a question token (never an answer) agrees; one
    whose answer moves within the context does not: agreement is per question, decoded."""
    plan = _plan(ckpts["qa"], tmp_path)
    data = tmp_path / "dev.json"
    context = "john ran to paris and mary ran to london"
    qas = [("who ran", "john"), ("where", "paris")]
    records = [
        {"id": str(i), "question": q, "context": context,
         "answers": {"text": [a], "answer_start": [context.index(a)]}}
        for i, (q, a) in enumerate(qas)
    ]  # fmt: skip
    data.write_text(json.dumps({"data": records}))
    examples, decoding = eval_examples(data, plan, 8, 0)
    assert decoding is not None and len(examples) == 2
    encodings = [plan.tokenizer.encode(q, context) for q, _ in qas]

    def at(i: int, char: int) -> int:  # the context token starting at ``char``
        e = encodings[i]
        return next(k for k, o in enumerate(e.offsets) if e.sequence_ids[k] == 1 and o[0] == char)

    def logits(ids: list[int], moved: dict[int, int]) -> np.ndarray:
        i = next(k for k, e in enumerate(encodings) if e.ids == ids)
        v = np.zeros((2, len(ids)), np.float32)
        v[:, at(i, context.index(qas[i][1]))] = 4.0  # start = end: a one-word answer
        if i in moved:
            v[:, moved[i]] = 5.0
        return v

    reference = [Pred(v, v.argmax(-1)) for v in (logits(e.ids, {}) for e in examples)]
    pad = plan.tspec.special_token_ids["pad"]

    def runner(moved: dict[int, int]) -> Any:
        def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            out = np.full((2, *feed["input_ids"].shape), -9.0, np.float32)
            for r, row in enumerate(feed["input_ids"].tolist()):
                ids = [t for t in row if t != pad]
                out[:, r, : len(ids)] = logits(ids, moved)
            return [out[0], out[1]]

        return run

    answers = decoding.answers(reference)
    held_out = Slice(
        "qa", examples, reference, decoding.metric(answers), decoding.score,
        lambda outs, batch: split_outputs("qa", outs, batch), pad, 32, "dev.json",
        decoding, answers,
    )  # fmt: skip
    conf = ExportConfig(checkpoint=str(ckpts["qa"]), out=str(tmp_path / "unused"))
    cpu = "CPUExecutionProvider"
    same = parity("int8", runner({0: 1, 1: 1}), cpu, held_out, conf)  # 1: the question's first
    moved = parity("int8", runner({1: at(1, context.index("london"))}), cpu, held_out, conf)
    assert answers == ["john", "paris"]
    assert same.agreement == 1.0 and same.metric_gap == 0.0  # every argmax moved, no answer
    assert same.batch_agreement == 1.0
    assert moved.agreement == 0.5 and moved.metric_gap == pytest.approx(50.0)


@pytest.mark.parametrize("names", ["missing", "default"])
def test_classifier_without_label_names(names: str, ckpts: dict[str, Path], tmp_path: Path) -> None:
    ckpt = Path(shutil.copytree(ckpts["classification"], tmp_path / "ckpt"))
    config = json.loads((ckpt / "config.json").read_text())
    del config["id2label"], config["label2id"]
    if names == "default":
        config["id2label"] = {"0": "LABEL_0", "1": "LABEL_1"}
    (ckpt / "config.json").write_text(json.dumps(config))
    data = tmp_path / "dev.tsv"  # with default names, labels are the class indices
    data.write_text("sentence\tlabel\nthe cat sat\t1\na big dog\t0\n")
    out = tmp_path / "b"
    args = ["--checkpoint", ckpt, "--out", out, "--eval", data, "--variants", "fp32"]
    assert export(*args) == 0
    m = B.load_bundle(out).manifest
    assert m.labels == ["LABEL_0", "LABEL_1"]
    assert m.variants["fp32"].outputs[0].shape == ["batch", 2]
    assert m.variants["fp32"].parity.metric is not None


def test_label_names_are_served_while_the_gate_reads_the_checkpoints(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "dev.tsv"  # gold by the checkpoint's names (neg, pos)
    data.write_text("sentence\tlabel\nthe cat sat\tpos\na big dog\tneg\n")
    args = ["--checkpoint", ckpts["classification"], "--eval", data, "--variants", "fp32"]
    assert export(*args, "--out", tmp_path / "b", "--label-names", "negative, positive") == 0
    m = B.load_bundle(tmp_path / "b").manifest
    assert m.labels == ["negative", "positive"]
    assert m.variants["fp32"].parity.metric is not None  # gold labels were still understood
    capsys.readouterr()
    for names in ("negative", "a,a", "negative,,positive"):
        assert export(*args, "--out", tmp_path / "c", "--label-names", names) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "needs 2 distinct non-empty names" in err[0], err
    token = ["--checkpoint", ckpts["token-classification"], "--out", tmp_path / "d"]
    assert export(*token, "--label-names", "a,b,c,d") == 2
    assert "classification bundles only" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_int8_that_misses_its_gate_is_left_out_and_the_exit_status_says_so(
    ckpts: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "b"
    args = ["--checkpoint", ckpts["classification"], "--out", out, "--max-steps", "8"]
    assert export(*args, "--int8-min-agreement", "1.5") == 5
    assert "int8 left out of the bundle" in caplog.text and "it serves fp32" in caplog.text
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "< 1.5" in summary["gate_misses"]["int8"][0]
    m = B.load_bundle(out).manifest
    assert set(m.variants) == {"fp32"} and not (out / "model.int8.onnx").exists()
    miss = m.gate_misses["int8"]
    assert miss.status == "failed" and "< 1.5" in miss.failures[0]
    assert miss.agreement_ci is not None and miss.agreement_ci[1] <= 1.0


def test_failed_gate_writes_nothing(
    ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "models" / "tiny"
    rc = export(
        "--checkpoint",
        ckpts["classification"],
        "--out",
        out,
        "--max-steps",
        "8",
        "--int8-min-agreement",
        "1.5",
        "--on-gate-miss",
        "fail",
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 4
    assert err[-1].startswith("error: parity gate failed, bundle not written (int8: agreement")
    assert "< 1.5" in err[-1]
    assert not out.exists() and list(out.parent.iterdir()) == []  # no partial folder left


def test_fp16_without_gpu_is_flagged(ckpts: dict[str, Path], tmp_path: Path) -> None:
    if cuda_available():
        pytest.skip("a GPU is present: fp16 parity is really checked there")
    out = tmp_path / "b"
    assert (
        export(
            "--checkpoint",
            ckpts["classification"],
            "--out",
            out,
            "--max-steps",
            "8",
            "--variants",
            "fp16,fp32",
        )
        == 0
    )
    m = B.load_bundle(out).manifest
    fp16 = m.variants["fp16"]
    assert fp16.provider == "CUDAExecutionProvider" and fp16.parity.status == "not_checked"
    assert fp16.parity.note is not None and fp16.parity.note.startswith("no GPU: fp16 parity")
    assert B.pick_variant(m, ["CUDAExecutionProvider"]).precision == "fp32"


def test_fill_mask_full_logits(ckpts: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "b"
    assert (
        export(
            "--checkpoint",
            ckpts["fill-mask"],
            "--out",
            out,
            "--max-steps",
            "8",
            "--variants",
            "fp32",
            "--fill-mask-output",
            "logits",
        )
        == 0
    )
    m = B.load_bundle(out).manifest
    assert m.fill_mask is not None and m.fill_mask.output == "logits"
    assert m.variants["fp32"].outputs[0].shape == ["batch", "sequence", len(VOCAB)]
    assert m.variants["fp32"].parity.status == "passed"


def test_out_folder_rules(
    ckpts: dict[str, Path],
    bundles: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = Path(shutil.copytree(bundles["classification"], tmp_path / "b"))
    args = ["--checkpoint", ckpts["qa"], "--out", out, "--max-steps", "8", "--variants", "fp32"]
    assert export(*args) == 2
    assert "already holds the bundle 'classification'" in capsys.readouterr().err
    assert B.load_bundle(out).task == "classification"  # untouched
    assert export(*args, "--overwrite") == 0
    assert B.load_bundle(out).task == "qa"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # staging and old copy gone
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert export("--checkpoint", ckpts["qa"], "--out", other, "--overwrite") == 2
    assert "not empty and holds no bundle" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kind", "extra", "message"),
    [
        ("headless", [], "has no task head (BertModel)"),
        ("unknown", [], "unknown task for architecture BertLMHeadModel"),
        ("classification", ["--task", "qa"], "--task qa does not match"),
        ("classification", ["--opset", "99"], "--opset 99: the installed onnxruntime"),
        ("classification", ["--variants", "fp32,int4"], "--variants 'fp32,int4'"),
        ("no-tokenizer", [], "has no tokenizer.json"),
    ],
)
def test_errors_are_one_line(
    kind: str,
    extra: list[str],
    message: str,
    ckpts: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ckpt = ckpts.get(kind, ckpts["classification"])
    if kind in ("unknown", "no-tokenizer"):
        ckpt = Path(shutil.copytree(ckpt, tmp_path / kind))
        if kind == "unknown":
            config = json.loads((ckpt / "config.json").read_text())
            config["architectures"] = ["BertLMHeadModel"]
            (ckpt / "config.json").write_text(json.dumps(config))
        else:
            (ckpt / "tokenizer.json").unlink()
    rc = export("--checkpoint", ckpt, "--out", tmp_path / "out", *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


def _logits_of_first_row(session: ort.InferenceSession, rows: list[list[int]]) -> np.ndarray:
    width = max(map(len, rows))
    ids = np.zeros((len(rows), width), np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return np.asarray(session.run(None, feed)[0][0])


@pytest.mark.parametrize("task", ["classification", "token-classification"])
def test_per_token_int8_answers_do_not_depend_on_the_batch(
    task: str, bundles: dict[str, Path], tmp_path: Path
) -> None:
    """A row's int8 logits alone equal its logits beside a long batch-mate and its padding
    (integer products, the same float scaling: equal to the last bit here; the documented
    tolerance is fp32's 1e-4); onnxruntime's dynamic int8 (one activation scale per tensor)
    moves them, which is what this check is for."""
    from training.export import quantize_int8

    folder = bundles[task]
    dynamic = tmp_path / "dynamic.onnx"
    quantize_int8(folder / "model.fp32.onnx", dynamic, method="dynamic")
    row = [VOCAB["[CLS]"], 7, 8, 9, VOCAB["[SEP]"]]
    words = sorted(set(VOCAB.values()) - {VOCAB["[PAD]"]})
    loud = [VOCAB["[CLS]"], *(words * 8)[:40], VOCAB["[SEP]"]]
    moved = {}
    for name, path in (("per-token", folder / "model.int8.onnx"), ("dynamic", dynamic)):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        alone = _logits_of_first_row(session, [row])
        beside = _logits_of_first_row(session, [row, loud])
        moved[name] = float(np.abs(alone - beside[: len(alone)]).max())
    assert moved["per-token"] <= 1e-6, moved
    assert moved["dynamic"] > 1e-6, moved
