"""Export of a BERT2BERT translation checkpoint: encoder and decoder (key/value cache) graphs per
variant behind the greedy-decoding parity gate, and the torch-free decoding of bundle/decoding.py
against transformers' ``generate``: greedy token for token, beam search (3 beams) too.

The checkpoint is a hidden-32, 2-layer BERT2BERT trained 40 steps on four hand-made pairs
(``tests.helpers.build_translation_checkpoint``): its outputs are non-trivial, and beam search
and greedy decoding differ on some inputs.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import PAIRS, WORDS, build_translation_checkpoint, export

torch = pytest.importorskip("torch")

SOURCES = [s for s, _ in PAIRS] + [
    "the dog",
    "a big red car and a small blue house",
    "she ran to the tree",
    "mary",
    "they walk in paris and john was small",
]
TARGETS = [t for _, t in PAIRS] + [
    "a cat",
    "the small green house of the car",
    "he walks to london",
    "john",
    "we run and mary is big",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, bundle) with fp32 and int8, parity checked on SOURCES (line-aligned file)."""
    root = tmp_path_factory.mktemp("translation")
    ckpt = build_translation_checkpoint(root / "ckpt")
    src, tgt = root / "eval.src", root / "eval.tgt"
    src.write_text("".join(s + "\n" for s in SOURCES))
    tgt.write_text("".join(t + "\n" for t in TARGETS))
    out = root / "bundle"
    args = ["--checkpoint", ckpt, "--out", out, "--eval", src, "--eval-target", tgt]
    assert export(*args, "--variants", "fp32,int8") == 0
    return ckpt, out


def _model(ckpt: Path) -> Any:
    from transformers import EncoderDecoderModel

    return EncoderDecoderModel.from_pretrained(str(ckpt)).eval()


def _runner(bundle: Path, variant: str = "fp32") -> tuple[Any, Any, Any]:
    from tokenizers import Tokenizer

    from app import generation
    from bundle.manifest import load_bundle

    b = load_bundle(bundle, variant=variant)
    gen = b.manifest.generation
    assert gen is not None and b.decoder_file is not None
    s2s = generation.Seq2Seq(
        b.model_file,
        b.decoder_file,
        layers=gen.num_layers,
        heads=gen.num_heads,
        head_dim=gen.head_dim,
    )
    return s2s, gen, Tokenizer.from_file(str(b.tokenizer_file))


def test_manifest_graphs_and_gate(exported: tuple[Path, Path]) -> None:
    _, bundle = exported
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["task"] == "translation"
    assert manifest["target_tokenizer"] is None  # one shared vocabulary
    gen = manifest["generation"]
    assert gen["decoder_start_token_id"] == 2 and gen["eos_token_id"] == 3  # [CLS], [SEP]
    assert gen["max_new_tokens"] == 12 and gen["num_beams"] == 3 and gen["num_layers"] == 2
    files = sorted(p.name for p in bundle.iterdir())
    assert files == sorted(
        [
            "decoder.fp32.onnx",
            "decoder.int8.onnx",
            "encoder.fp32.onnx",
            "encoder.int8.onnx",
            "manifest.json",
            "tokenizer.json",
            "tokenizer_config.json",
        ]
    )  # one file per graph per variant: no external-data sidecars
    for v in ("fp32", "int8"):
        spec = manifest["variants"][v]
        assert spec["file"] == f"encoder.{v}.onnx"
        assert spec["decoder"]["file"] == f"decoder.{v}.onnx"
        names = [t["name"] for t in spec["decoder"]["inputs"]]
        assert names[:6] == [
            "input_ids",
            "position_ids",
            "decoder_attention_mask",
            "encoder_attention_mask",
            "past_key.0",
            "past_value.0",
        ]
        assert names[-1] == "cross_value.1"
        parity = spec["parity"]
        assert parity["status"] == "passed" and parity["examples"] == len(SOURCES)
        assert parity["data"] == "eval.src" and parity["batch_agreement"] == 1.0
    fp32 = manifest["variants"]["fp32"]["parity"]
    assert fp32["agreement"] == 1.0 and fp32["max_abs_diff"] < 1e-4
    assert fp32["thresholds"] == {"min_equal": 1.0}
    # with reference translations, BLEU of the greedy outputs beside PyTorch's, paired
    assert fp32["metric_name"] == "bleu_greedy" and fp32["metric"] == fp32["reference_metric"]
    assert fp32["metric_gap"] == 0.0 and fp32["metric_gap_ci"] == [0.0, 0.0]
    int8 = manifest["variants"]["int8"]["parity"]
    assert int8["thresholds"] == {
        "min_equal": 0.5,
        "min_batch_agreement": 1.0,
        "max_metric_drop": 1.0,
    }
    low, high = int8["metric_gap_ci"]
    assert low <= int8["metric_gap"] <= high
    assert int8["metric"] == pytest.approx(int8["reference_metric"] - int8["metric_gap"])


def test_int8_gate_judges_bleu_against_the_references(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    """An int8 translation is gated on its BLEU cost (paired bootstrap interval over sentences),
    not only on token equality: asking it to beat PyTorch by 5 BLEU, which it cannot, drops it
    with a message that gives the figures (exit status 5)."""
    import json as json_mod

    ckpt, _ = exported
    root = tmp_path / "data"
    root.mkdir()
    src, tgt = root / "eval.src", root / "eval.tgt"
    src.write_text("".join(s + "\n" for s in SOURCES))
    tgt.write_text("".join(t + "\n" for t in TARGETS))
    out = tmp_path / "bundle"
    args = ["--checkpoint", ckpt, "--out", out, "--eval", src, "--eval-target", tgt]
    assert export(*args, "--int8-max-metric-drop", "-5") == 5  # written without int8
    manifest = json_mod.loads((out / "manifest.json").read_text())
    assert sorted(manifest["variants"]) == ["fp32"]
    (miss,) = manifest["gate_misses"]["int8"]["failures"]
    assert "greedy BLEU" in miss and "below PyTorch's (95 % CI" in miss and "> -5" in miss


def test_broken_comparison_fails_the_gate(
    exported: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.export import seq2seq as export_mod

    ckpt, _ = exported
    real = export_mod.torch_translations

    def broken(*args: Any, **kwargs: Any) -> list[list[int]]:
        out = real(*args, **kwargs)
        out[0] = [*out[0], 5]  # one reference output off by a token
        return out

    monkeypatch.setattr(export_mod, "torch_translations", broken)
    out = tmp_path / "refused"
    args = ["--checkpoint", ckpt, "--out", out, "--max-steps", "4", "--variants", "fp32"]
    assert export(*args) == 4  # ParityError
    assert not out.exists() and not list(tmp_path.glob(".refused*"))
    # 3 of 4 equal passes a 0.75 threshold
    assert export(*args, "--fp32-min-equal", "0.75") == 0


def test_onnx_greedy_and_beam_equal_transformers(exported: tuple[Path, Path]) -> None:
    from training.export import ort_translations, torch_translations

    ckpt, bundle = exported
    model = _model(ckpt)
    s2s, gen, tok = _runner(bundle)
    rng = random.Random(0)
    texts = SOURCES + [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14))) for _ in range(8)
    ]
    src = [e.ids for e in tok.encode_batch(texts)]
    start, eos = gen.decoder_start_token_id, gen.eos_token_id
    outputs = {}
    for beams, max_new in ((1, 12), (3, 12), (3, 4), (2, 12)):
        want = torch_translations(model, src, 0, 8, max_new, beams)
        got = ort_translations(s2s, src, 0, 8, max_new, start, eos, beams)
        assert got == want, (beams, max_new)
        outputs[beams, max_new] = want
    greedy, beam = outputs[1, 12], outputs[3, 12]
    assert len({tuple(x) for x in greedy}) > 1  # not one answer for everything
    assert greedy != beam  # beam search finds other outputs on some inputs
    assert all(len(x) <= 4 for x in outputs[3, 4])


def test_decoder_cache_rows_follow_take(exported: tuple[Path, Path]) -> None:
    """Dropping and reordering cache rows (finished rows, beams) keeps each row's own cache:
    a row decoded inside a batch equals it decoded alone."""
    from bundle import decoding

    _, bundle = exported
    s2s, gen, tok = _runner(bundle)
    src = [e.ids for e in tok.encode_batch(SOURCES[:3])]
    width = max(map(len, src))
    ids = np.zeros((3, width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(src):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    start, eos = gen.decoder_start_token_id, gen.eos_token_id
    state = s2s.encode(ids, mask)
    together = decoding.greedy(s2s, state, [12, 2, 12], start, eos)
    alone = [
        decoding.greedy(
            s2s, s2s.encode(ids[i : i + 1, : len(r)], mask[i : i + 1, : len(r)]), [lim], start, eos
        )[0]
        for i, (r, lim) in enumerate(zip(src, [12, 2, 12], strict=True))
    ]
    assert together == alone and len(together[1]) <= 2


def _encoded(s2s: Any, tok: Any, texts: list[str]) -> Any:
    rows = [e.ids for e in tok.encode_batch(texts)]
    width = max(map(len, rows))
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    return s2s.encode(ids, mask)


def test_sequences_joining_mid_decoding_equal_decoded_alone(exported: tuple[Path, Path]) -> None:
    """Continuous batching: searches that join the decode loop steps later, from batches of
    other source lengths (caches left-padded, encoder outputs right-padded, positions per row),
    produce what each produces alone; cache positions no live row uses are cut off."""
    from bundle import decoding

    _, bundle = exported
    s2s, gen, tok = _runner(bundle)
    start, eos = gen.decoder_start_token_id, gen.eos_token_id

    def searches() -> list[Any]:
        return [
            decoding.Greedy(12, start, eos),
            decoding.Beam(3, 12, start, eos),
            decoding.Greedy(3, start, eos),
            decoding.Beam(2, 5, start, eos),
        ]

    alone = [
        decoding.decode(s2s, _encoded(s2s, tok, [SOURCES[i]]), [search])[0]
        for i, search in enumerate(searches())
    ]
    loop = decoding.DecodeLoop(s2s)
    joined = searches()
    loop.add(_encoded(s2s, tok, [SOURCES[0]]), joined[:1])
    for _ in range(2):
        loop.step()
    loop.add(_encoded(s2s, tok, SOURCES[1:3]), joined[1:3])  # another source length
    assert loop.state is not None and loop.state.past_mask.shape == (1 + 3 + 1, 2)
    loop.step()
    loop.add(_encoded(s2s, tok, [SOURCES[3]]), joined[3:])
    widths = []
    while loop.searches:
        loop.step()
        if loop.state is not None:
            widths.append((loop.state.past_mask.shape[1], int(loop.state.positions.max())))
    assert [s.result() for s in joined] == alone
    # once the first search is done, the positions only it used are cut from the cache
    assert all(width <= longest + 1 for width, longest in widths[-3:])


def test_continuous_decoder_serves_concurrent_batches(exported: tuple[Path, Path]) -> None:
    """Batches submitted from several threads decode together and each gets its own answers."""
    from concurrent.futures import ThreadPoolExecutor

    from app import generation
    from bundle.batch import WorkItem, pad_batch

    _, bundle = exported
    s2s, gen, tok = _runner(bundle)
    backend = generation.Seq2SeqBackend(s2s, start=gen.decoder_start_token_id, eos=gen.eos_token_id)
    batches = [
        pad_batch(
            [
                WorkItem(tuple(tok.encode(text).ids), payload=(beams, 12))
                for text, beams in zip(SOURCES[lo : lo + 2], (1, 3), strict=False)
            ]
        )
        for lo in range(0, len(SOURCES), 2)
    ]
    alone = [backend.generate(b) for b in batches]
    with ThreadPoolExecutor(len(batches)) as pool:
        together = list(pool.map(backend.predict, batches))
    assert [[r.arrays["ids"].tolist() for r in rows] for rows in together] == alone
    # rows of several batches shared decoder calls (one batch has at most 1 + 3 rows)
    assert backend.decoder.peak_rows > 4


def test_int8_bundle_decodes_as_fp32(exported: tuple[Path, Path]) -> None:
    from bundle import decoding

    _, bundle = exported
    texts = []
    for variant in ("fp32", "int8"):
        s2s, gen, tok = _runner(bundle, variant)
        ids = np.array([tok.encode(SOURCES[3]).ids])
        state = s2s.encode(ids, np.ones_like(ids))
        (out,) = decoding.greedy(s2s, state, [12], gen.decoder_start_token_id, gen.eos_token_id)
        texts.append(decoding.detokenize(tok, out))
    assert texts[0] == texts[1] == PAIRS[3][1]


def test_target_vocabulary_of_its_own(tmp_path: Path) -> None:
    """A decoder with another vocabulary: the bundle carries target_tokenizer.json, served
    translations are decoded with it, and the gate passes on generated sources."""
    from app.backend import RowOutput
    from app.tasks import Translation
    from bundle.manifest import load_bundle
    from tests.helpers import build_checkpoint, build_german_decoder
    from training.finetune import FinetuneConfig
    from training.finetuning import config_class
    from training.tasks import translation as tr

    enc = build_checkpoint(tmp_path / "enc", "pretraining")
    dec = tmp_path / "dec"
    dec_vocab = build_german_decoder(dec)
    conf = config_class(FinetuneConfig, "translation")(
        model=str(enc), decoder_model=str(dec), max_target_len=16, num_beams=1
    )
    toks = tr.load_tokenizers(conf, str(enc), fine_tuned=False)
    model = tr.load_model(str(enc), conf, toks, fresh_head=True)
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    toks.save_pretrained(ckpt)
    out = tmp_path / "bundle"
    args = ["--checkpoint", ckpt, "--out", out, "--max-steps", "6", "--variants", "fp32"]
    assert export(*args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target_tokenizer"]["file"] == "target_tokenizer.json"
    assert manifest["target_tokenizer"]["vocab_size"] == len(dec_vocab)
    assert manifest["generation"]["max_new_tokens"] == 16
    assert manifest["generation"]["max_new_tokens_limit"] == 32
    assert manifest["variants"]["fp32"]["parity"]["data"] == "generated"
    bundle = load_bundle(out)
    assert bundle.target_tokenizer_file == out / "target_tokenizer.json"
    task = Translation(bundle)
    assert task.target_tokenizer.get_vocab() == dec_vocab
    prepared = task.prepare(["the dog"], 1, 4, True)
    assert prepared.items[0].payload == (1, 4)
    ids = np.array([dec_vocab["ein"], dec_vocab["hund"], dec_vocab["läuft"]])
    (res,) = task.finish(prepared, [RowOutput({"ids": ids}, 0.0, 0.0, 1)])
    assert (res.translation, res.tokens) == ("ein hund läuft", 3)
