"""How much of the MLM gradient reaches each layer of a from-scratch BERT, per learning rate.

BERT is post-LayerNorm: each block is ``LN(x + F(x))``, so once the sublayer outputs F grow
large against the residual x, the gradient that flows down to the layers below shrinks at every
block. The probe trains BERT-mini from random initialisation for ``--steps`` updates on a token
store (the recipe's batch, warm-up over 20 steps, AdamW) once per ``--lrs`` value, and every
``--every`` steps records the norm of the loss gradient with respect to the output of the
embeddings and of each layer, and the top/bottom ratio.

    python benchmarks/gradient_flow.py --store runs/gutenberg-mini/data \
        --tokenizer runs/gutenberg-tokenizer --lrs 1e-3,3e-4 --out runs/gradient-flow
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


def probe(args: argparse.Namespace, lr: float) -> list[dict[str, Any]]:
    import torch
    from transformers import BertForPreTraining

    from training.modeling import bert_config, pretraining_loss
    from training.pretraining_data import MaskingConfig, PretrainingDataset, open_store
    from training.tokenizer import load

    torch.manual_seed(args.seed)
    tok = load(Path(args.tokenizer))
    vocab = tok.get_vocab()
    _, splits = open_store(Path(args.store))
    specials = ["[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]"]
    data = PretrainingDataset(
        splits["train"],
        MaskingConfig(),
        seed=args.seed,
        cls_id=vocab["[CLS]"],
        sep_id=vocab["[SEP]"],
        mask_id=vocab["[MASK]"],
        pad_id=vocab["[PAD]"],
        vocab_size=len(vocab),
        special_ids=[vocab[t] for t in specials],
    )
    model = BertForPreTraining(bert_config(args.preset, len(vocab), dropout=0.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, eps=1e-6, weight_decay=0.01)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20))
    outputs: dict[str, Any] = {}

    def keep(name: str) -> Any:
        def hook(_module: Any, _inputs: Any, out: Any) -> None:
            t = out[0] if isinstance(out, tuple) else out
            t.retain_grad()
            outputs[name] = t

        return hook

    model.bert.embeddings.register_forward_hook(keep("embeddings"))
    for i, layer in enumerate(model.bert.encoder.layer):
        layer.register_forward_hook(keep(f"layer {i}"))
    rows = []
    b = args.batch_size
    for step in range(args.steps + 1):
        arrays = data.batch(0, range(step * b, (step + 1) * b))
        batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
        out = pretraining_loss(model, batch)
        optimizer.zero_grad()
        out.loss.backward()
        if step % args.every == 0:
            norms = {k: float(t.grad.norm()) for k, t in outputs.items()}
            top = norms[f"layer {len(model.bert.encoder.layer) - 1}"]
            rows.append(
                {
                    "lr": lr,
                    "step": step,
                    "mlm_loss": float(out.mlm_loss),
                    "grad_norms": norms,
                    "top_over_embeddings": top / max(norms["embeddings"], 1e-30),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        warmup.step()
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", required=True, help="a pretraining token store (out/data)")
    p.add_argument("--tokenizer", required=True, help="the tokenizer folder of that store")
    p.add_argument("--lrs", default="1e-3,3e-4", help="comma-separated peak learning rates")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--preset", default="mini")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/gradient-flow")
    args = p.parse_args()
    rows = [r for lr in args.lrs.split(",") for r in probe(args, float(lr))]
    layers = list(rows[0]["grad_norms"])
    table = markdown_table(
        ["lr", "step", "MLM loss", *layers, "top / embeddings"],
        [
            [r["lr"], r["step"], round(r["mlm_loss"], 2)]
            + [f"{r['grad_norms'][k]:.1e}" for k in layers]
            + [round(r["top_over_embeddings"], 1)]
            for r in rows
        ],
    )
    write_result(Path(args.out), "gradient_flow", {"rows": rows, "args": vars(args)}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
