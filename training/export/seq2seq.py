"""The export of a translation checkpoint (BERT2BERT, an ``EncoderDecoderModel`` folder).

It becomes two graphs per variant (app/generation.py describes them): encoder.<v>.onnx, which
also computes every decoder layer's cross-attention keys/values from the encoder states (they
depend on the source only), and decoder.<v>.onnx, one decoding step with the self-attention
key/value cache (past length 0 at the first step). The decoder step is written out from the BERT
modules' own sub-layers (embeddings at position = past length, self-attention over past + new,
cross-attention, feed-forward, LM head), so the legacy TorchScript exporter traces flat tensors
with no cache objects. No onnxruntime BERT fusion here (its Attention op takes no cache).
Parity gate: greedy ids of onnxruntime decoding == PyTorch's generate (num_beams=1) on the
held-out sources (share equal >= fp32_min_equal / int8_min_equal), and the max |logit
difference| of teacher-forced steps along PyTorch's outputs (reported); int8's greedy outputs
batched must equal its one-by-one ones (``int8_min_batch_agreement``). Where the sources come
with reference translations (``--eval-target``, JSON records), int8 is also gated on its greedy
BLEU cost against PyTorch's on the same sentences (``int8_max_metric_drop`` points, judged on
the 95 % interval of a paired bootstrap over sentences, as the encoder tasks' metric gap is).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import bundle.manifest as bundle_schema
from bundle import decoding
from bundle.batch import WorkItem, pad_batch
from bundle.manifest import GenerationSpec, ParityReport, TensorSpec, VariantSpec
from training.errors import DataError, TrainingError, UsageError
from training.export.checkpoint import bundle_tokenizer, one_line, read_tokenizer
from training.export.options import ExportConfig
from training.export.parity import (
    BATCH_CHECK_EXAMPLES,
    Gap,
    inconclusive,
    judge_gap,
    log_report,
)
from training.export.parity_data import generated_examples, sample
from training.export.quantize import quantize_int8
from training.export.stats import paired_bootstrap
from training.export.writer import (
    Contents,
    check_request,
    graph_file,
    parse_variants,
    variant_spec,
)

log = logging.getLogger("training.export")  # one logger name for the whole command


def _heads(x: Any, heads: int) -> Any:
    """(batch, length, hidden) -> (batch, heads, length, head_dim)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def translation_graphs(model: Any) -> tuple[Any, Any]:
    """(encoder module, decoder-step module) over flat tensors, for the TorchScript exporter."""
    import torch

    dec_bert = model.decoder.bert
    layers = list(dec_bert.encoder.layer)
    heads = int(model.config.decoder.num_attention_heads)
    head_dim = int(model.config.decoder.hidden_size) // heads
    scale = head_dim**-0.5
    proj = getattr(model, "enc_to_dec_proj", None)

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.model.encoder(
                input_ids=input_ids, attention_mask=attention_mask
            ).last_hidden_state
            h = proj(hidden) if proj is not None else hidden
            outs = [hidden]
            for layer in layers:
                att = layer.crossattention.self
                outs += [_heads(att.key(h), heads), _heads(att.value(h), heads)]
            return tuple(outs)

    def attend(q: Any, k: Any, v: Any, mask: Any) -> Any:
        w = torch.matmul(q, k.transpose(2, 3)) * scale
        if mask is not None:
            w = w + mask
        ctx = torch.matmul(w.softmax(-1), v)  # (B, heads, 1, head_dim)
        return ctx.transpose(1, 2).flatten(2)

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self,
            input_ids: Any,
            position_ids: Any,
            decoder_attention_mask: Any,
            encoder_attention_mask: Any,
            *flat: Any,
        ) -> Any:
            n = 2 * len(layers)
            past, cross = flat[:n], flat[n:]
            emb = dec_bert.embeddings
            x = (
                emb.word_embeddings(input_ids)
                + emb.token_type_embeddings(torch.zeros_like(input_ids))
                + emb.position_embeddings(position_ids)
            )
            x = emb.LayerNorm(x)
            self_mask = (1.0 - decoder_attention_mask[:, None, None, :].to(x.dtype)) * -1.0e9
            mask = (1.0 - encoder_attention_mask[:, None, None, :].to(x.dtype)) * -1.0e9
            presents = []
            for i, layer in enumerate(layers):
                sa = layer.attention.self
                k = torch.cat([past[2 * i], _heads(sa.key(x), heads)], dim=2)
                v = torch.cat([past[2 * i + 1], _heads(sa.value(x), heads)], dim=2)
                presents += [k, v]
                x = layer.attention.output(attend(_heads(sa.query(x), heads), k, v, self_mask), x)
                ca = layer.crossattention.self
                ctx = attend(_heads(ca.query(x), heads), cross[2 * i], cross[2 * i + 1], mask)
                x = layer.crossattention.output(ctx, x)
                x = layer.output(layer.intermediate(x), x)
            return (self.model.decoder.cls(x), *presents)

    return Encoder().eval(), Decoder().eval()


def _kv_names(kind: str, layers: int) -> list[str]:
    return [f"{kind}_{kv}.{i}" for i in range(layers) for kv in ("key", "value")]


def translation_specs(
    layers: int, vocab: int
) -> tuple[list[TensorSpec], list[TensorSpec], list[TensorSpec], list[TensorSpec]]:
    """(encoder inputs, encoder outputs, decoder inputs, decoder outputs)."""

    def kv(kind: str, length: str) -> list[TensorSpec]:
        shape: list[int | str] = ["batch", "heads", length, "head_dim"]
        return [TensorSpec(name=n, dtype="float32", shape=shape) for n in _kv_names(kind, layers)]

    enc_in = [
        TensorSpec(name=n, dtype="int64", shape=["batch", "source"])
        for n in bundle_schema.ENCODER_INPUT_NAMES
    ]
    enc_out = [
        TensorSpec(name="last_hidden_state", dtype="float32", shape=["batch", "source", "hidden"]),
        *kv("cross", "source"),
    ]
    dec_in = [
        TensorSpec(name="input_ids", dtype="int64", shape=["batch", 1]),
        TensorSpec(name="position_ids", dtype="int64", shape=["batch", 1]),
        TensorSpec(name="decoder_attention_mask", dtype="int64", shape=["batch", "total"]),
        TensorSpec(name="encoder_attention_mask", dtype="int64", shape=["batch", "source"]),
        *kv("past", "past"),
        *kv("cross", "source"),
    ]
    dec_out = [
        TensorSpec(name="logits", dtype="float32", shape=["batch", 1, vocab]),
        *kv("present", "total"),
    ]
    return enc_in, enc_out, dec_in, dec_out


def _onnx_export(
    module: Any, args: tuple[Any, ...], path: Path, ins: list[TensorSpec], outs: list[TensorSpec]
) -> None:
    import torch

    axes = {
        t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in [*ins, *outs]
    }
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            input_names=[t.name for t in ins],
            output_names=[t.name for t in outs],
            dynamic_axes=axes,
            opset_version=int(module.opset),
            do_constant_folding=True,
        )
    module.eval()


def export_translation_graphs(
    model: Any, enc_path: Path, dec_path: Path, opset: int, specs: tuple[Any, ...]
) -> None:
    import torch

    enc_in, enc_out, dec_in, dec_out = specs
    encoder, decoder = translation_graphs(model)
    encoder.opset = decoder.opset = opset
    cfg_dec = model.config.decoder
    vocab_src = int(model.config.encoder.vocab_size)
    vocab_tgt = int(cfg_dec.vocab_size)
    heads = int(cfg_dec.num_attention_heads)
    head_dim = int(cfg_dec.hidden_size) // heads
    layers = int(cfg_dec.num_hidden_layers)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab_src, (2, 7), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # padding in the example, else the mask is traced away
    _onnx_export(encoder, (ids, mask), enc_path, enc_in, enc_out)
    with torch.no_grad():
        cross = list(encoder(ids, mask)[1:])
    past = [torch.randn(2, heads, 3, head_dim, generator=gen) for _ in range(2 * layers)]
    tok = torch.randint(5, vocab_tgt, (2, 1), generator=gen)
    positions = torch.tensor([[3], [1]])
    self_mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])  # row 1 joined two steps later
    args = (tok, positions, self_mask, mask, *past, *cross)
    _onnx_export(decoder, args, dec_path, dec_in, dec_out)


@dataclass
class TranslationParity:
    equal: float
    max_abs_diff: float
    mean_abs_diff: float
    batch_equal: float
    examples: int
    outputs: list[list[int]]  # onnxruntime's greedy ids per source


def _padded(rows: Sequence[Sequence[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) of ``rows`` right-padded as the server pads them."""
    batch = pad_batch([WorkItem.of(r) for r in rows], pad)
    return batch.input_ids, batch.attention_mask


def torch_translations(
    model: Any, sources: Sequence[Sequence[int]], pad: int, batch: int, max_new: int, beams: int = 1
) -> list[list[int]]:
    import torch

    from training.tasks import translation as tr

    out: list[list[int]] = []
    with torch.no_grad():
        for lo in range(0, len(sources), batch):
            ids, mask = _padded(sources[lo : lo + batch], pad)
            out += tr.generate(
                model,
                torch.from_numpy(ids),
                torch.from_numpy(mask),
                num_beams=beams,
                max_new_tokens=max_new,
            )
    return out


def ort_translations(
    s2s: Any,
    sources: Sequence[Sequence[int]],
    pad: int,
    batch: int,
    max_new: int,
    start: int,
    eos: int,
    beams: int = 1,
) -> list[list[int]]:
    out: list[list[int]] = []
    for lo in range(0, len(sources), batch):
        ids, mask = _padded(sources[lo : lo + batch], pad)
        state = s2s.encode(ids, mask)
        limits = [max_new] * len(ids)
        if beams == 1:
            out += decoding.greedy(s2s, state, limits, start, eos)
        else:
            out += decoding.beam_search(s2s, state, beams, limits, start, eos)
    return out


def translation_parity(
    model: Any,
    s2s: Any,
    sources: Sequence[Sequence[int]],
    reference: Sequence[Sequence[int]],
    pad: int,
    batch: int,
    max_new: int,
    start: int,
    eos: int,
) -> TranslationParity:
    """Greedy agreement with PyTorch (``reference``), batched-vs-single agreement, and the logit
    differences of teacher-forced steps along PyTorch's outputs."""
    import torch

    got = ort_translations(s2s, sources, pad, batch, max_new, start, eos)
    equal = sum(a == b for a, b in zip(got, reference, strict=True)) / len(sources)
    check = list(range(min(BATCH_CHECK_EXAMPLES, len(sources))))
    single = [ort_translations(s2s, [sources[i]], pad, 1, max_new, start, eos)[0] for i in check]
    batch_equal = sum(single[j] == got[i] for j, i in enumerate(check)) / max(len(check), 1)
    diffs: list[np.ndarray] = []
    for i in check:
        forced = [start, *reference[i]]
        ids = torch.tensor([list(sources[i])])
        with torch.no_grad():
            ref = model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                decoder_input_ids=torch.tensor([forced]),
            ).logits[0]
        state = s2s.encode(ids.numpy(), np.ones_like(ids.numpy()))
        for t, tok in enumerate(forced):
            logits, state = s2s.step(state, np.array([tok], dtype=np.int64))
            diffs.append(np.abs(logits[0] - ref[t].numpy()))
    flat = np.concatenate(diffs) if diffs else np.zeros(1)
    return TranslationParity(
        equal, float(flat.max()), float(flat.mean()), batch_equal, len(sources), got
    )


def translation_sources(
    conf: ExportConfig, tok: Any
) -> tuple[list[list[int]], list[str] | None, str]:
    """Token ids of the parity sources (tokenized as serving will), their reference translations
    where the data has them (None otherwise), and the data's name."""
    from training.tasks import translation as tr

    if not conf.eval:
        examples = generated_examples("translation", tok, conf.generated_examples, conf.seed)
        return [e.ids for e in examples], None, "generated"
    path = Path(conf.eval)
    if not path.is_file():
        raise UsageError(f"--eval {path} does not exist")
    pairs: list[tuple[str, str | None]]
    if conf.eval_target or tr.is_json(path):
        read = tr.load_examples(path, tr.Config(eval_target=conf.eval_target), part="eval")
        pairs = [(p.source, p.target) for p in read]
    else:
        lines = path.read_text(encoding="utf-8").splitlines()
        pairs = [(t, None) for t in lines if t.strip()]
    pairs = sample(pairs, conf.max_steps, conf.seed)
    if not pairs:
        raise DataError(f"no parity examples from {path.name}")
    targets = [t for _, t in pairs if t is not None]
    ids = [e.ids for e in tok.encode_batch([s for s, _ in pairs])]
    return ids, targets if len(targets) == len(pairs) else None, path.name


def bleu_units(hypotheses: Sequence[str], targets: Sequence[str], tokenize: str) -> np.ndarray:
    """(examples, 10): each sentence's sacreBLEU sufficient statistics (n-gram matches and
    totals for n = 1..4, hypothesis and reference length); :func:`bleu_of` their sum is the
    corpus BLEU."""
    from training.tasks import translation as tr

    metric = tr.bleu_metric(tokenize)
    rows = []
    for hyp, ref in zip(hypotheses, targets, strict=True):
        s = metric.corpus_score([hyp], [[ref]])
        rows.append([*s.counts, *s.totals, s.sys_len, s.ref_len])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 10)


def bleu_of(stats: np.ndarray) -> float:
    """Corpus BLEU (sacreBLEU's defaults: exp smoothing) of summed :func:`bleu_units`."""
    from sacrebleu.metrics import BLEU

    c = [int(x) for x in stats]
    return float(BLEU.compute_bleu(c[:4], c[4:8], c[8], c[9], smooth_method="exp").score)


@dataclass
class BleuReference:
    """What BLEU on the parity slice needs: the references, how hypotheses are detokenized and
    scored (as serving and evaluation do), and PyTorch's BLEU statistics (:func:`bleu_units`)."""

    targets: list[str]
    tokenizer: Any  # the target tokenizer
    join_punctuation: bool
    tokenize: str  # sacreBLEU's tokenizer, the fine-tuning run's
    reference_units: np.ndarray  # PyTorch's outputs scored

    @classmethod
    def of(
        cls,
        targets: list[str],
        tokenizer: Any,
        join_punctuation: bool,
        tokenize: str,
        reference: Sequence[Sequence[int]],
    ) -> BleuReference:
        units = bleu_units(detokenized(tokenizer, reference, join_punctuation), targets, tokenize)
        return cls(targets, tokenizer, join_punctuation, tokenize, units)

    def units(self, outputs: Sequence[Sequence[int]]) -> np.ndarray:
        texts = detokenized(self.tokenizer, outputs, self.join_punctuation)
        return bleu_units(texts, self.targets, self.tokenize)


def detokenized(tokenizer: Any, outputs: Sequence[Sequence[int]], join: bool) -> list[str]:
    """Generated ids -> text, as serving and evaluation turn them (bundle/decoding.py)."""
    return [decoding.detokenize(tokenizer, ids, join) for ids in outputs]


@dataclass
class HeldOutSources:
    """The parity sources and PyTorch's greedy outputs on them: what every variant is compared
    with."""

    sources: list[list[int]]
    reference: list[list[int]]
    data: str  # the file name, or "generated"
    bleu: BleuReference | None = None  # where the data has reference translations


def translation_contents(conf: ExportConfig) -> Contents:
    """Check the request, read the tokenizer(s) and the parity sources, load the model and
    decode the sources with it; the graphs are written (and gated) when
    :func:`~training.export.writer.write_bundle` calls for them."""
    from training.tasks import translation as tr
    from training.tasks.translation_model import quiet_load, silence_loss_notice

    positive = {
        "--max-steps": conf.max_steps,
        "--batch-size": conf.batch_size,
        "--max-beams": conf.max_beams,
    }
    ckpt = check_request(conf, "translation", positive)
    variants = parse_variants(conf.variants or "fp32,int8", False)
    if "fp16" in variants:
        raise UsageError("--variants: translation bundles have fp32 and int8 variants only")
    enc_conf, dec_conf = ckpt.config["encoder"], ckpt.config["decoder"]
    vocab, dec_vocab = int(enc_conf["vocab_size"]), int(dec_conf["vocab_size"])
    max_pos = int(enc_conf.get("max_position_embeddings", 512))
    tok, tspec = bundle_tokenizer(ckpt.path, "translation", conf.max_length, vocab, max_pos)
    target_dir = ckpt.path / tr.TARGET_TOKENIZER
    target = None
    if (target_dir / "tokenizer.json").is_file():
        target_tok, target_spec = read_tokenizer(target_dir, "translation", None, dec_vocab)
        target_spec = target_spec.model_copy(
            update={"file": "target_tokenizer.json", "config_file": None}
        )
        target = (target_tok, target_spec)
    sources, targets, data = translation_sources(conf, tok)

    out = Path(conf.out)
    log.info("export %s (BERT2BERT, translation) -> %s: variants %s", ckpt.path, out, variants)
    started = time.perf_counter()
    from transformers import EncoderDecoderModel

    silence_loss_notice()
    try:
        model = quiet_load(EncoderDecoderModel.from_pretrained, str(ckpt.path)).eval()
    except UsageError as exc:
        raise DataError(f"--checkpoint {ckpt.path} could not be loaded: {exc}") from exc
    gen_conf = model.generation_config
    dec_pos = int(dec_conf.get("max_position_embeddings", 512))
    max_new = int(conf.max_new_tokens or gen_conf.max_new_tokens or 64)
    beams = int(conf.num_beams or gen_conf.num_beams or 1)
    if not 1 <= max_new <= dec_pos:
        raise UsageError(f"--max-new-tokens must be in 1..{dec_pos} (the decoder's positions)")
    if not 1 <= beams <= conf.max_beams:
        raise UsageError(f"--num-beams must be in 1..{conf.max_beams} (--max-beams)")
    heads = int(dec_conf["num_attention_heads"])
    gen = GenerationSpec(
        decoder_start_token_id=int(model.config.decoder_start_token_id),
        eos_token_id=int(gen_conf.eos_token_id),
        pad_token_id=int(model.config.pad_token_id if model.config.pad_token_id is not None else 0),
        max_new_tokens=max_new,
        max_new_tokens_limit=dec_pos,
        num_beams=beams,
        max_beams=conf.max_beams,
        num_layers=int(dec_conf["num_hidden_layers"]),
        num_heads=heads,
        head_dim=int(dec_conf["hidden_size"]) // heads,
    )
    specs = translation_specs(gen.num_layers, dec_vocab)
    reference = torch_translations(model, sources, gen.pad_token_id, conf.batch_size, max_new)
    held_out = HeldOutSources(sources, reference, data)
    if targets is not None:
        from training.finetuning import run_config_of

        held_out.bleu = BleuReference.of(
            targets,
            target[0] if target else tok,
            gen.join_punctuation,
            str(run_config_of(ckpt.path).get("bleu_tokenize", "13a")),
            reference,
        )

    def graphs(folder: Path) -> dict[bundle_schema.VariantName, VariantSpec]:
        enc32, dec32 = folder / "encoder.fp32.onnx", folder / "decoder.fp32.onnx"
        export_translation_graphs(model, enc32, dec32, conf.opset, specs)
        return {
            v: translation_variant(v, folder, model, held_out, gen, specs, conf) for v in variants
        }

    return Contents(conf, ckpt, started, graphs, (tok, tspec), target, fields={"generation": gen})


def translation_variant(
    v: bundle_schema.VariantName,
    folder: Path,
    model: Any,
    held_out: HeldOutSources,
    gen: GenerationSpec,
    specs: tuple[list[TensorSpec], list[TensorSpec], list[TensorSpec], list[TensorSpec]],
    conf: ExportConfig,
) -> VariantSpec:
    """Write ``encoder.<v>.onnx`` and ``decoder.<v>.onnx`` (fp32: already there), run their
    greedy-decoding parity check, describe them."""
    from app import generation

    enc, dec = folder / f"encoder.{v}.onnx", folder / f"decoder.{v}.onnx"
    quant = None
    if v == "int8":
        weights = conf.int8_weight_type
        enc32, dec32 = folder / "encoder.fp32.onnx", folder / "decoder.fp32.onnx"
        q = (conf.int8_per_channel, conf.int8_reduce_range, weights)
        quant = quantize_int8(enc32, enc, *q, method=conf.int8_method)
        quantize_int8(dec32, dec, *q, method=conf.int8_method)
    try:
        s2s = generation.Seq2Seq(
            enc, dec, layers=gen.num_layers, heads=gen.num_heads, head_dim=gen.head_dim
        )
    except Exception as exc:
        raise TrainingError(
            f"onnxruntime cannot load the {v} graphs: {one_line(exc)[:200]}"
        ) from exc
    fig = translation_parity(
        model,
        s2s,
        held_out.sources,
        held_out.reference,
        gen.pad_token_id,
        conf.batch_size,
        gen.max_new_tokens,
        gen.decoder_start_token_id,
        gen.eos_token_id,
    )
    need = conf.fp32_min_equal if v == "fp32" else conf.int8_min_equal
    thresholds = {"min_equal": need}
    failures: list[str] = []
    unsure: list[str] = []
    if fig.equal < need:
        failures.append(f"greedy outputs equal to PyTorch's {fig.equal:.4g} < {need:.4g}")
    if v == "int8":  # as the encoder tasks' gate: a row's answer must not move with its batch
        thresholds["min_batch_agreement"] = conf.int8_min_batch_agreement
        if fig.batch_equal < conf.int8_min_batch_agreement:
            failures.append(
                f"batched vs one-by-one greedy outputs equal {fig.batch_equal:.4g} < "
                f"{conf.int8_min_batch_agreement:.4g}"
            )
    metric = Gap(100.0 * fig.equal)
    reference_metric = 100.0
    if held_out.bleu is not None:  # BLEU against the references, paired with PyTorch's
        ref_units = held_out.bleu.reference_units
        units = held_out.bleu.units(fig.outputs)
        metric = Gap(bleu_of(units.sum(0)), *paired_bootstrap(ref_units, units, bleu_of))
        reference_metric = bleu_of(ref_units.sum(0))
        if v == "int8":
            thresholds["max_metric_drop"] = conf.int8_max_metric_drop
            judge_gap("greedy BLEU", metric, conf.int8_max_metric_drop, failures, unsure)
    interval = metric.interval.as_list() if metric.interval is not None else None
    report = ParityReport(
        status="failed" if failures else "passed",
        provider=s2s.provider,
        examples=fig.examples,
        data=held_out.data,
        max_abs_diff=fig.max_abs_diff,
        mean_abs_diff=fig.mean_abs_diff,
        agreement=fig.equal,
        metric_name="bleu_greedy" if held_out.bleu is not None else "greedy_equal",
        metric=metric.metric,
        reference_metric=reference_metric,
        metric_gap=metric.points,
        metric_gap_ci=interval,
        batch_agreement=fig.batch_equal,
        thresholds=thresholds,
        failures=failures,
        note=inconclusive(fig.examples, unsure, failures),
    )
    log_report(v, report)
    enc_in, enc_out, dec_in, dec_out = specs
    return variant_spec(
        enc,
        v,
        conf.opset,
        inputs=enc_in,
        outputs=enc_out,
        quantization=quant,
        parity=report,
        decoder=bundle_schema.GraphSpec(**graph_file(dec), inputs=dec_in, outputs=dec_out),
    )
