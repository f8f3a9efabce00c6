"""``python -m app [--models-dir DIR] [--host H] [--port P] ...``: run the service.

Every setting is a flag (``--max-batch-size 16``) and a ``BERT_*`` environment variable (see
docs/CONFIGURATION.md); a flag wins. Also:

    python -m app --write-openapi openapi.json            # the committed API schema
    python -m app --write-config-doc docs/CONFIGURATION.md  # the settings table
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.settings import Settings, reference_markdown

__all__ = ["main"]


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = (field.description or "") + f" [env BERT_{name.upper()}]"
        annotation = field.annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        elif typing.get_origin(annotation) is typing.Literal:
            parser.add_argument(flag, choices=[str(a) for a in args], help=help_text)
        elif annotation is int:
            parser.add_argument(flag, type=int, metavar="N", help=help_text)
        elif annotation is float:
            parser.add_argument(flag, type=float, metavar="X", help=help_text)
        else:
            parser.add_argument(flag, metavar="VALUE", help=help_text)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Any]]:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="The bert-forge inference service (HTTP/JSON over ONNX model bundles).",
    )
    _add_setting_flags(parser)
    parser.add_argument("--write-openapi", metavar="FILE", help="write the OpenAPI JSON and exit")
    parser.add_argument(
        "--write-config-doc", metavar="FILE", help="write the settings table (markdown) and exit"
    )
    ns = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(ns).items() if k in Settings.model_fields and v is not None}
    return ns, overrides


def openapi_json() -> str:
    """The service's OpenAPI schema as committed in openapi.json."""
    from app.main import create_app

    app = create_app(Settings(), setup_logging=False)
    return json.dumps(app.openapi(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ns, overrides = parse_args(argv)
    if ns.write_config_doc:
        Path(ns.write_config_doc).write_text(reference_markdown(), encoding="utf-8")
        return 0
    if ns.write_openapi:
        Path(ns.write_openapi).write_text(openapi_json(), encoding="utf-8")
        return 0
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        print(
            f"error: invalid settings: {where + ': ' if where else ''}{first['msg']}",
            file=sys.stderr,
        )
        return 2

    from app.main import create_app
    from app.server import Server, uvicorn_config

    app = create_app(settings)
    server = Server(
        uvicorn_config(app, settings.host, settings.port),
        app.state.service,
        grace_s=settings.shutdown_grace_s,
    )
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
