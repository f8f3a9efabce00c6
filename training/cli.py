"""``python -m training <command>``: the offline pipeline's entry point.

Each command lives in its own module (imported only when used, so ``--help`` stays quick) and
exposes ``add_parser(subparsers)``; errors derived from :class:`TrainingError` end the command
with a one-line reason and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable

from training.errors import TrainingError

# command -> (module, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "tokenizer": (
        "training.tokenizer",
        "train a WordPiece tokenizer or wrap an existing vocab.txt",
    ),
    "pretrain": ("training.pretrain", "pretrain BERT from random initialisation (MLM + NSP)"),
    "finetune": (
        "training.finetune",
        "fine-tune a pretrained BERT: classification, qa, ner, summarisation, translation",
    ),
    "evaluate": ("training.evaluate", "evaluate a fine-tuned checkpoint on a labelled file"),
    "export": ("training.export", "export a checkpoint to an ONNX model bundle (parity-gated)"),
    "demo": ("training.demo", "build the default bundles (embedded or real data) and serve them"),
}


def command_parser(
    sub: argparse._SubParsersAction, name: str, description: str | None, run: Callable[..., int]
) -> argparse.ArgumentParser:
    """The parser of one command, with what every command shares: its summary from
    :data:`COMMANDS`, the module doc as description, ``--config FILE`` and the function to run."""
    p = sub.add_parser(
        name,
        help=COMMANDS[name][1],
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="JSON/YAML/TOML file of options (flags override it)")
    p.set_defaults(func=run)
    return p


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train BERT models: tokenizer -> pretrain -> finetune -> evaluate -> export.",
    )
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, summary) in COMMANDS.items():
        if name == command:
            importlib.import_module(module).add_parser(sub)
        else:  # listed in the top-level help without importing its (heavy) module
            sub.add_parser(name, help=summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
