"""Translation's BERT2BERT model: tokenizers of both sides, warm start, tied embeddings, generation.

:mod:`training.tasks.translation` (data, features, evaluation, metrics) re-exports these. The
model is an ``EncoderDecoderModel`` warm-started from BERT checkpoints (:func:`load_model`), its
word embeddings tied when one vocabulary serves both sides (:func:`tie_embeddings`); generation
(:func:`generate`) starts from ``[CLS]`` and stops at ``[SEP]``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.errors import UsageError
from training.task_model import check_vocab, load_tokenizer, model_config

if TYPE_CHECKING:
    import torch
    from torch import nn

    from training.tasks.translation import Config

log = logging.getLogger(__name__)

TARGET_TOKENIZER = "target_tokenizer"  # folder of the target side's tokenizer, when it differs
_PROBE = "Ab Äö"  # a normaliser that changes this lower-cases or strips accents

Tokenizer = Any  # a fast (Rust-backed) transformers tokenizer


def silence_loss_notice() -> None:
    """EncoderDecoderModel warns on every forward with labels that its loss moved out of the
    decoder in transformers 4.12: nothing to act on (installed when a model is loaded)."""
    warnings.filterwarnings("ignore", message="Version v4.12.0 introduces", category=FutureWarning)


@dataclass(frozen=True)
class Tokenizers:
    """The source and the target tokenizer: one object when both sides share a vocabulary.

    Stands where the other tasks take one tokenizer (``pad_token_id``, ``save_pretrained``).
    """

    source: Tokenizer
    target: Tokenizer

    @property
    def shared(self) -> bool:
        return self.source is self.target

    @property
    def pad_token_id(self) -> int | None:
        return self.source.pad_token_id

    def save_pretrained(self, folder: str | Path) -> None:
        """The source tokenizer at ``folder``; a different target one in ``target_tokenizer/``."""
        self.source.save_pretrained(str(folder))
        if not self.shared:
            self.target.save_pretrained(str(Path(folder) / TARGET_TOKENIZER))


def as_tokenizers(tokenizer: Tokenizer | Tokenizers) -> Tokenizers:
    return tokenizer if isinstance(tokenizer, Tokenizers) else Tokenizers(tokenizer, tokenizer)


def same_vocabulary(a: Tokenizer, b: Tokenizer) -> bool:
    """Whether two tokenizers turn text into the same ids (vocabulary and normalisation)."""
    if a is b:
        return True
    norm_a, norm_b = a.backend_tokenizer.normalizer, b.backend_tokenizer.normalizer
    return bool(a.get_vocab() == b.get_vocab() and str(norm_a) == str(norm_b))


def check_positions(config: Config, encoder: Any, decoder: Any) -> None:
    enc_pos = getattr(encoder, "max_position_embeddings", None)
    dec_pos = getattr(decoder, "max_position_embeddings", None)
    if enc_pos and config.max_source_len > enc_pos:
        raise UsageError(
            f"--max-source-len {config.max_source_len} exceeds the encoder's {enc_pos} positions"
        )
    longest = max(config.max_target_len, new_tokens(config))
    if dec_pos and longest > dec_pos:
        raise UsageError(
            f"--max-target-len/--max-new-tokens {longest} exceed the decoder's {dec_pos} positions"
        )


def new_tokens(config: Config) -> int:
    return config.max_new_tokens or config.max_target_len


def read_tokenizers(config: Any, tok_dir: str | Path, *, fine_tuned: bool) -> Tokenizers:
    """The source and target tokenizers, checked against the checkpoint(s).

    Fine-tuning (``fine_tuned`` False): ``tok_dir`` tokenizes the sources; the targets use the
    ``--decoder-model`` folder's tokenizer when it has one with another vocabulary, else the same.
    Evaluation: ``tok_dir`` and its ``target_tokenizer/`` when present.
    """
    source = load_tokenizer(tok_dir)
    mc = model_config(config.model)
    if fine_tuned:
        if getattr(mc, "model_type", None) != "encoder-decoder":
            kind = (getattr(mc, "architectures", None) or [mc.model_type])[0]
            raise UsageError(
                f"--model {config.model} has no trained translation head (it is a {kind}): "
                "fine-tune it first"
            )
        target = source
        if (Path(tok_dir) / TARGET_TOKENIZER / "tokenizer.json").is_file():
            target = load_tokenizer(Path(tok_dir) / TARGET_TOKENIZER)
        check_vocab(mc.encoder, source, config.model, str(tok_dir))
        check_vocab(mc.decoder, target, config.model, str(Path(tok_dir) / TARGET_TOKENIZER))
        check_positions(config, mc.encoder, mc.decoder)
        return Tokenizers(source, target)
    if getattr(mc, "model_type", None) == "encoder-decoder":
        raise UsageError(
            f"--model {config.model} is already an encoder-decoder: name the BERT checkpoint(s) "
            "to warm-start from (--model, --decoder-model)"
        )
    dec_dir = config.decoder_model or config.model
    dc = model_config(dec_dir)
    target = source
    if config.decoder_model and (Path(dec_dir) / "tokenizer.json").is_file():
        own = load_tokenizer(dec_dir)
        target = source if same_vocabulary(source, own) else own
    check_vocab(mc, source, config.model, str(tok_dir))
    check_vocab(dc, target, dec_dir, dec_dir if target is not source else str(tok_dir))
    check_positions(config, mc, dc)
    if target is not source:
        log.info("the decoder has its own vocabulary (%s): embeddings are not tied", dec_dir)
    if lossy_normalizer(target) is not None:
        log.warning(
            "the target tokenizer lower-cases or strips accents: its hypotheses cannot match "
            "cased references (BLEU is also reported against normalised ones, *_normalized); "
            "a tokenizer trained with --cased keeps them"
        )
    return Tokenizers(source, target)


def quiet_load(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # load reports are replaced by our own one-line summaries
    try:
        return fn(*args, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"{args[0] if args else ''} cannot be loaded: {first}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)


def _module_name(root: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in root.named_modules() if m is module)


def tie_embeddings(model: Any) -> None:
    """One word-embedding table for the encoder input, the decoder input and the decoder output
    (:func:`load_model` calls it when the vocabulary is shared).

    ``save_pretrained`` refuses tensors shared without a declared tie, and a declared tie would
    drop the decoder's copy that ``EncoderDecoderModel.from_pretrained`` needs: a state-dict hook
    hands the decoder's input embedding over as a copy, so the folder holds the table under the
    encoder's and the decoder's names (the LM head's tie within the decoder is declared).
    """
    shared = model.encoder.get_input_embeddings()
    model.decoder.set_input_embeddings(shared)
    model.tie_weights()  # the decoder's output layer follows its (now shared) input embeddings
    key = f"decoder.{_module_name(model.decoder, shared)}.weight"

    def copy_decoder_embeddings(
        module: nn.Module, state: dict[str, torch.Tensor], prefix: str, meta: Any
    ) -> None:
        del module, meta
        if prefix + key in state:
            state[prefix + key] = state[prefix + key].clone()

    model.register_state_dict_post_hook(copy_decoder_embeddings)


def load_model(
    path: str, config: Any, tokenizer: Tokenizer | Tokenizers, *, fresh_head: bool
) -> Any:
    """The ``EncoderDecoderModel``: warm-started from BERT checkpoints (``fresh_head``:
    fine-tuning; ``path`` the encoder, ``config.decoder_model`` or ``path`` the decoder), else a
    fine-tuned one loaded whole."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, EncoderDecoderModel

    silence_loss_notice()
    toks = as_tokenizers(tokenizer)
    if not fresh_head:
        model, info = quiet_load(
            EncoderDecoderModel.from_pretrained, path, output_loading_info=True
        )
        missing = sorted(info["missing_keys"])
        if missing:
            raise UsageError(
                f"--model {path} lacks weights of the encoder-decoder ({', '.join(missing[:3])}"
                ", ...): is it a fine-tuned translation model?"
            )
        return model

    dec_path = config.decoder_model or path
    enc_config = quiet_load(AutoConfig.from_pretrained, path)
    enc_config.is_decoder, enc_config.add_cross_attention = False, False
    encoder, enc_info = quiet_load(
        AutoModel.from_pretrained, path, config=enc_config, output_loading_info=True
    )
    lacking = [k for k in enc_info["missing_keys"] if "pooler." not in k]
    if lacking:
        raise UsageError(
            f"--model {path} lacks encoder weights ({', '.join(sorted(lacking)[:3])}, ...): "
            "is it a BERT checkpoint?"
        )
    dec_config = quiet_load(AutoConfig.from_pretrained, dec_path)
    dec_config.is_decoder, dec_config.add_cross_attention = True, True
    decoder, dec_info = quiet_load(
        AutoModelForCausalLM.from_pretrained, dec_path, config=dec_config, output_loading_info=True
    )
    fresh = sorted(dec_info["missing_keys"])
    lacking = [k for k in fresh if ".crossattention." not in k and not k.startswith("cls.")]
    if lacking:
        raise UsageError(
            f"--decoder-model {dec_path} lacks decoder weights ({', '.join(lacking[:3])}, ...): "
            "is it a BERT checkpoint?"
        )
    model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    # the parts' classes, not those of the checkpoints they came from (BertForPreTraining)
    encoder.config.architectures = [type(encoder).__name__]  # the same objects as
    decoder.config.architectures = [type(decoder).__name__]  # model.config.encoder / .decoder
    target = toks.target
    model.config.decoder_start_token_id = target.cls_token_id
    model.config.pad_token_id = target.pad_token_id
    gen = model.generation_config
    gen.decoder_start_token_id = target.cls_token_id
    gen.bos_token_id = target.cls_token_id
    gen.eos_token_id = target.sep_token_id
    gen.pad_token_id = target.pad_token_id
    gen.max_new_tokens = new_tokens(config)
    gen.num_beams = config.num_beams
    gen._from_model_config = False  # set here, not derived from config.json
    enc_emb, dec_emb = encoder.get_input_embeddings(), decoder.get_input_embeddings()
    tied = toks.shared and enc_emb.weight.shape == dec_emb.weight.shape
    if tied:
        tie_embeddings(model)
    pooler = getattr(model.encoder, "pooler", None)
    if pooler is not None:  # unused by the decoder: frozen, so DDP sees no unused gradients
        for p in pooler.parameters():
            p.requires_grad_(False)
    log.info(
        "BERT2BERT from %s (encoder) and %s (decoder): embeddings %s; new weights: %d "
        "cross-attention tensors%s",
        path,
        dec_path,
        "tied (one vocabulary)" if tied else "separate",
        sum(".crossattention." in k for k in fresh),
        ", the decoder's LM head" if any(k.startswith("cls.") for k in fresh) else "",
    )
    return model


def generate(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    num_beams: int = 1,
    max_new_tokens: int = 64,
    use_cache: bool = True,
) -> list[list[int]]:
    """Generated target ids per row: without the start token, cut before the first [SEP]
    (``eos_token_id``). ``num_beams`` 1 is greedy decoding."""
    gen = model.generation_config
    start = model.config.decoder_start_token_id
    eos, pad = gen.eos_token_id, model.config.pad_token_id
    beam_options = {"length_penalty": 1.0, "early_stopping": False} if num_beams > 1 else {}
    out = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        num_beams=num_beams,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        use_cache=use_cache,
        decoder_start_token_id=start,
        eos_token_id=eos,
        pad_token_id=pad,
        **beam_options,
    )
    rows: list[list[int]] = []
    for seq in out.tolist():
        ids = seq[1:]  # the decoder start token
        if eos in ids:
            ids = ids[: ids.index(eos)]
        rows.append(ids)
    return rows


def lossy_normalizer(tokenizer: Tokenizer) -> Any:
    """The tokenizer's normaliser when it loses case or accents (uncased BERT), else None."""
    norm = tokenizer.backend_tokenizer.normalizer
    return norm if norm is not None and norm.normalize_str(_PROBE) != _PROBE else None


__all__ = [
    "TARGET_TOKENIZER",
    "Tokenizers",
    "as_tokenizers",
    "check_positions",
    "generate",
    "load_model",
    "lossy_normalizer",
    "new_tokens",
    "quiet_load",
    "read_tokenizers",
    "same_vocabulary",
    "silence_loss_notice",
    "tie_embeddings",
]
