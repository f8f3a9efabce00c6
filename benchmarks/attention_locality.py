"""Where a BERT's attention heads look: the share each head gives its neighbours, [CLS] and [SEP].

A model on the frequent-token plateau attends almost uniformly (the previous or next token gets
about 1/length of each query's attention in every head); a pretrained BERT has heads that put
most of their weight on the previous or the next token. The probe runs the checkpoint with eager
attention on held-out instances of a token store (the ones ``python -m training pretrain``
evaluates on, masked BERT's way) and reports, per layer and head, the mean attention to the
token before, the token after, [CLS] and [SEP], beside the uniform share.

    python benchmarks/attention_locality.py --model runs/gutenberg-mini \
        --store runs/gutenberg-mini/data --out runs/attention
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import markdown_table, write_result  # noqa: E402


def attention_shares(attentions: Any, input_ids: Any, mask: Any, cls_id: int, sep_id: int) -> Any:
    """(layers, heads, 5) mean attention of real query tokens to: previous, next, [CLS], [SEP],
    and the uniform share 1/length, from per-layer (B, H, T, T) attention probabilities."""
    import torch

    real = mask.bool()  # (B, T)
    pair = (real[:, 1:] & real[:, :-1])[:, None, :]  # (B, 1, T-1): both ends are tokens
    query = real[:, None, :]  # (B, 1, T)
    uniform = (mask.sum(-1, keepdim=True).float().reciprocal() * real).sum() / real.sum()
    is_cls = (input_ids == cls_id).float()[:, None, None, :]  # (B, 1, 1, T)
    is_sep = (input_ids == sep_id).float()[:, None, None, :]

    def mean(x: Any, keep: Any) -> Any:  # (B, H, N) over the kept (B, 1, N) -> (H,)
        w = keep.float().expand_as(x)
        return (x * w).sum((0, 2)) / w.sum((0, 2))

    layers = []
    for a in attentions:  # (B, H, T, T)
        shares = [
            mean(torch.diagonal(a, offset=-1, dim1=-2, dim2=-1), pair),  # query t+1 -> t
            mean(torch.diagonal(a, offset=1, dim1=-2, dim2=-1), pair),  # query t -> t+1
            mean((a * is_cls).sum(-1), query),
            mean((a * is_sep).sum(-1), query),
        ]
        layers.append(torch.stack([*shares, uniform.expand_as(shares[0])], dim=-1))
    return torch.stack(layers).numpy()  # (L, H, 5)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True, help="a BERT checkpoint folder (with its tokenizer)")
    p.add_argument("--store", required=True, help="a pretraining token store (out/data)")
    p.add_argument("--split", default="heldout")
    p.add_argument("--instances", type=int, default=64)
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/attention")
    args = p.parse_args()

    import torch
    from transformers import AutoTokenizer, BertModel

    from training.pretraining_data import MaskingConfig, PretrainingDataset, open_store

    torch.manual_seed(args.seed)
    model = BertModel.from_pretrained(args.model, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(args.model)
    _, splits = open_store(Path(args.store))
    special = [i for i in tok.all_special_ids if i is not None]
    data = PretrainingDataset(
        splits[args.split],
        MaskingConfig(max_seq_len=args.max_seq_len),
        seed=args.seed,
        cls_id=tok.cls_token_id,
        sep_id=tok.sep_token_id,
        mask_id=tok.mask_token_id,
        pad_id=tok.pad_token_id,
        vocab_size=len(tok),
        special_ids=special,
    )
    n = min(args.instances, data.epoch_size(0))
    batch = {k: torch.from_numpy(v) for k, v in data.batch(0, range(n)).items()}
    with torch.no_grad():
        out = model(
            input_ids=batch["input_ids"],
            token_type_ids=batch["token_type_ids"],
            attention_mask=batch["attention_mask"],
            output_attentions=True,
        )
    shares = attention_shares(
        out.attentions, batch["input_ids"], batch["attention_mask"], tok.cls_token_id,
        tok.sep_token_id,
    )  # fmt: skip
    rows = [
        [f"{layer}.{head}", *(f"{float(x):.3f}" for x in shares[layer, head])]
        for layer in range(shares.shape[0])
        for head in range(shares.shape[1])
    ]
    table = markdown_table(["layer.head", "previous", "next", "[CLS]", "[SEP]", "uniform"], rows)
    best = shares[..., :2].max()
    result: dict[str, Any] = {
        "model": str(args.model),
        "instances": n,
        "columns": ["previous", "next", "cls", "sep", "uniform"],
        "shares": shares.tolist(),
        "max_neighbour_share": float(best),
        "uniform_share": float(shares[0, 0, 4]),
    }
    summary = (
        f"\nmost attention any head gives a neighbour: {best:.3f} "
        f"(uniform share {shares[0, 0, 4]:.3f})"
    )
    write_result(Path(args.out), "attention_locality", result, table + summary)
    print(json.dumps({"max_neighbour_share": result["max_neighbour_share"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
