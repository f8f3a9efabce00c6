"""BERT model sizes and the pretraining objective.

The model is stock ``transformers.BertForPreTraining`` so every checkpoint loads with
``from_pretrained``. What differs from ``BertForPreTraining.forward`` is the loss: the vocabulary
projection runs only at the masked positions (the original recipe's gather), not at all T
positions. For BERT-mini (hidden 256, vocab 30k) the projection is ~70 % of the FLOPs at every
position; at 15 % of positions it all but disappears.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForPreTraining

from training.errors import UsageError

# name -> (layers, hidden); heads = hidden / 64, intermediate = 4 * hidden (as Google's BERTs)
PRESETS: dict[str, tuple[int, int]] = {
    "tiny": (2, 128),
    "mini": (4, 256),
    "small": (4, 512),
    "medium": (8, 512),
    "base": (12, 768),
    "large": (24, 1024),
}


def bert_config(
    preset: str,
    vocab_size: int,
    *,
    max_position_embeddings: int = 512,
    num_layers: int | None = None,
    hidden_size: int | None = None,
    num_heads: int | None = None,
    intermediate_size: int | None = None,
    dropout: float = 0.1,
    pad_token_id: int = 0,
    initializer_range: float = 0.02,
    tie_word_embeddings: bool = True,
) -> BertConfig:
    """A BertConfig from a preset name (or ``custom``), with any size overridden."""
    if preset == "custom":
        if not (num_layers and hidden_size):
            raise UsageError("--preset custom needs --num-layers and --hidden-size")
        layers, hidden = num_layers, hidden_size
    elif preset in PRESETS:
        layers, hidden = PRESETS[preset]
        layers, hidden = num_layers or layers, hidden_size or hidden
    else:
        raise UsageError(
            f"unknown preset {preset!r}: choose one of {', '.join([*PRESETS, 'custom'])}"
        )
    heads = num_heads or max(1, hidden // 64)
    if hidden % heads:
        raise UsageError(f"hidden size {hidden} is not divisible by {heads} attention heads")
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate_size or 4 * hidden,
        max_position_embeddings=max_position_embeddings,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=pad_token_id,
        initializer_range=initializer_range,
        tie_word_embeddings=tie_word_embeddings,
        architectures=["BertForPreTraining"],
    )


def sinusoidal_positions_(embedding: torch.nn.Embedding, std: float) -> None:
    """Overwrite a position-embedding table with the Transformer's sinusoids, scaled to ``std``.

    The table stays a trained parameter of a stock BertModel; only its starting point changes.
    Sinusoids make every offset a fixed linear map of the positions, so attention to the
    neighbours is easy to learn from the first steps; random positions must each be learnt.
    """
    n, d = embedding.weight.shape
    position = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10_000.0) / d))
    table = torch.zeros(n, d)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: d // 2])
    with torch.no_grad():
        embedding.weight.copy_(table * (std / table.std()))


def _layers(model: BertForPreTraining) -> list[Any]:
    return list(model.bert.encoder.layer)


def _factor(target: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, R) with L @ R the best rank-``rank`` approximation of ``target``, balanced."""
    u, s, vh = torch.linalg.svd(target)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


def mimetic_attention_(
    model: BertForPreTraining,
    qk: tuple[float, float] = (0.7, 0.7),
    vo: tuple[float, float] = (0.4, 0.4),
) -> None:
    """Start every self-attention layer where trained ones are: Trockman & Kolter's mimetic init.

    Per head, the query-key product ``W_q^T W_k`` starts near ``a Z + b I`` (Z Gaussian with
    variance 1/d), so a token's query matches keys like itself: with position embeddings that
    are alike for near positions (``--position-init sinusoidal``) that is attention to the
    neighbours from the first step. ``W_o W_v`` starts near ``a Z - b I``, as in trained layers.
    The weights are only set differently; the model stays a stock BertModel. Uses torch's
    global RNG (seed it first).
    """
    d = model.config.hidden_size
    heads = model.config.num_attention_heads
    width = d // heads
    eye = torch.eye(d)
    with torch.no_grad():
        for layer in _layers(model):
            attn = layer.attention
            query, key = attn.self.query.weight, attn.self.key.weight  # (out d, in d)
            for h in range(heads):
                rows = slice(h * width, (h + 1) * width)
                z = torch.randn(d, d) / math.sqrt(d)
                left, right = _factor(qk[0] * z + qk[1] * eye, width)  # (d, w), (w, d)
                query[rows] = left.T
                key[rows] = right
            z = torch.randn(d, d) / math.sqrt(d)
            left, right = _factor(vo[0] * z - vo[1] * eye, d)
            attn.output.dense.weight.copy_(left)  # W_o (d, d)
            attn.self.value.weight.copy_(right)  # W_v (d, d)


def neighbour_heads_(
    model: BertForPreTraining,
    offsets: tuple[int, ...] = (-1, 1),
    length: int = 128,
    scale: float = 1.5,
) -> None:
    """Start head ``h`` of every layer reading the token at ``offsets[h]`` (default: head 0 the
    previous token, head 1 the next one); the other heads keep their random start.

    A from-scratch BERT on a CPU budget never finds these heads by itself (mean attention to
    either neighbour stays at the uniform 1/length), so it stays a bag-of-words model. Here the
    query and key weights of those heads read, from the position embeddings, features
    ``cos/sin(f * i)`` at random frequencies f in (0.3, pi), the keys shifted by the offset, so
    their dot product peaks where ``j = i + offset``: a ridge fit from the first ``length`` rows
    of the position table (any table with independent rows, such as the random start), scaled
    by the LayerNorm's typical divisor. The ridge term (a tenth of the mean eigenvalue of the
    table's Gram matrix) keeps the map well conditioned: the exact pseudo-inverse of a square
    table (``tiny``: hidden size = ``length`` = 128) gave query weights 13x larger, attention
    scores in the thousands and fp32 logits that differ across kernels by 1e-3. At step 0 the
    neighbour gets ~0.28 of each query's attention in BERT-mini at 128 tokens and ~0.09 in
    ``tiny`` (uniform: 0.008); training is free to change it. The model stays stock. A model
    with fewer heads than offsets gets the first offsets only (one head: the previous token).
    """
    d = model.config.hidden_size
    heads = model.config.num_attention_heads
    width = d // heads
    offsets = offsets[:heads]
    emb = model.bert.embeddings
    with torch.no_grad():
        table = emb.position_embeddings.weight[:length].float()  # (T, d)
        divisor = (
            emb.word_embeddings.weight.var() + table.var() + emb.token_type_embeddings.weight.var()
        ).sqrt()
        gram = table.T @ table  # (d, d)
        ridge = 0.1 * gram.diagonal().mean() * torch.eye(d)
        inverse = torch.linalg.solve(gram + ridge, table.T)  # (d, T)
        frequency = torch.rand(width // 2) * (math.pi - 0.3) + 0.3
        position = torch.arange(length, dtype=torch.float32)

        def features(shift: int) -> torch.Tensor:  # (T, width)
            angle = (position[:, None] + shift) * frequency[None, :]
            return torch.cat([angle.cos(), angle.sin()], 1)

        for layer in _layers(model):
            attn = layer.attention.self
            for h, offset in enumerate(offsets):
                rows = slice(h * width, (h + 1) * width)
                attn.query.weight[rows] = scale * divisor * (inverse @ features(0)).T
                attn.key.weight[rows] = scale * divisor * (inverse @ features(-offset)).T
                attn.query.bias[rows] = 0.0
                attn.key.bias[rows] = 0.0


def count_parameters(model: torch.nn.Module, *, non_embedding: bool = False) -> int:
    n = sum(p.numel() for p in model.parameters())
    if non_embedding:
        n -= sum(p.numel() for name, p in model.named_parameters() if "embeddings" in name)
    return n


@dataclass
class PretrainingOutput:
    loss: torch.Tensor  # scalar: mlm_loss + nsp_loss
    mlm_loss: torch.Tensor
    nsp_loss: torch.Tensor
    mlm_correct: torch.Tensor  # scalar counts, for accuracies summed over batches
    mlm_count: torch.Tensor
    nsp_correct: torch.Tensor
    nsp_count: torch.Tensor
    mlm_predictions: torch.Tensor  # (B*P,) argmax ids of every prediction slot, padded ones too


def locality_mask(
    attention_mask: torch.Tensor, num_heads: int, strength: float, dtype: torch.dtype
) -> torch.Tensor:
    """A (B, heads, T, T) additive attention mask: padding plus a bias toward near tokens.

    Head h's logits fall by ``strength * 2**-h`` per token of distance (ALiBi's shape, both
    directions). A trained stock BertModel has no such bias; pretraining anneals ``strength`` to
    zero, so the model starts out reading its neighbours and the position embeddings take over.
    """
    t = attention_mask.shape[1]
    position = torch.arange(t, device=attention_mask.device)
    distance = (position[None, :] - position[:, None]).abs().to(dtype)  # (T, T)
    slopes = 2.0 ** -torch.arange(num_heads, device=attention_mask.device, dtype=dtype)
    bias = -strength * slopes[:, None, None] * distance  # (H, T, T)
    padding = (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
    return bias[None] + padding  # (B, H, T, T)


def pretraining_loss(
    model: BertForPreTraining,
    batch: dict[str, torch.Tensor],
    *,
    nsp: bool = True,
    locality: float = 0.0,
) -> PretrainingOutput:
    """MLM + NSP loss of a batch from :func:`training.pretraining_data.collate`.

    Shapes: input_ids/token_type_ids/attention_mask (B, T); masked_lm_* (B, P);
    next_sentence_label (B,). With ``nsp=False`` the loss is the MLM loss alone (the NSP head
    still runs, so its accuracy is reported, but it gets no gradient).
    """
    mask = batch["attention_mask"]
    if locality > 0:
        mask = locality_mask(mask, model.config.num_attention_heads, locality, torch.float32)
    out = model.bert(
        input_ids=batch["input_ids"],
        attention_mask=mask,
        token_type_ids=batch["token_type_ids"],
    )
    hidden = out.last_hidden_state  # (B, T, H)
    positions = batch["masked_lm_positions"]  # (B, P)
    index = positions.unsqueeze(-1).expand(-1, -1, hidden.size(-1))  # (B, P, H)
    gathered = hidden.gather(1, index)  # (B, P, H)
    # Every slot goes through the head, padded ones with weight 0: a fixed (B*P, V) shape keeps
    # the allocator from fragmenting on per-batch sizes and torch.compile from recompiling.
    # Padded slots are few (P is ~round(0.15 T)), so the extra projection work is small.
    logits = model.cls.predictions(gathered).flatten(0, 1)  # (B*P, V)
    weights = batch["masked_lm_weights"].reshape(-1).float()  # (B*P,)
    targets = batch["masked_lm_ids"].reshape(-1)
    per_slot = F.cross_entropy(logits.float(), targets, reduction="none")
    count = weights.sum()
    mlm_loss = (per_slot * weights).sum() / count.clamp(min=1.0)
    nsp_logits = model.cls.seq_relationship(out.pooler_output)  # (B, 2)
    nsp_labels = batch["next_sentence_label"]
    nsp_loss = F.cross_entropy(nsp_logits.float(), nsp_labels)
    with torch.no_grad():
        predictions = logits.argmax(-1)
        mlm_correct = ((predictions == targets).float() * weights).sum()
        nsp_correct = (nsp_logits.argmax(-1) == nsp_labels).sum()
    return PretrainingOutput(
        loss=mlm_loss + nsp_loss if nsp else mlm_loss,
        mlm_loss=mlm_loss.detach(),
        nsp_loss=nsp_loss.detach(),
        mlm_correct=mlm_correct,
        mlm_count=count.detach(),
        nsp_correct=nsp_correct,
        nsp_count=torch.tensor(nsp_labels.numel()),
        mlm_predictions=predictions,
    )
