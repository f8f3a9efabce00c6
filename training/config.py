"""Run configurations as dataclasses, filled from defaults, then a ``--config`` file, then flags.

Every field of a config dataclass becomes a command-line flag (``field_name`` -> ``--field-name``)
whose help text is the field's ``metadata["help"]``. The resolved config is saved beside every
checkpoint, so a run can be reproduced from its output folder alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from training.errors import UsageError

T = TypeVar("T")


def field(default: Any = dataclasses.MISSING, *, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a help text (shown by ``--help``)."""
    metadata = {"help": help, **kwargs.pop("metadata", {})}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(inner type, is_list) for ``int``, ``int | None``, ``list[str]`` and the like."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    if origin in (list, Sequence, tuple):
        return typing.get_args(annotation)[0], True
    if origin is typing.Literal:
        return annotation, False
    return annotation, False


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per field of dataclass ``cls``; defaults are filled in by :func:`resolve`."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("cli") is False:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind, is_list = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        help_text = f.metadata.get("help", "")
        if default not in (None, [], "") and kind is not bool:
            help_text += f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
            kwargs["help"] += f" (default: {'on' if default else 'off'})"
        elif typing.get_origin(kind) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(kind))
        else:
            kwargs["type"] = kind
            kwargs["metavar"] = f.name.upper()
        if is_list:
            kwargs["nargs"] = "+"
        parser.add_argument(flag, **kwargs)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON, YAML or TOML config file into a dict (keys may use - or _)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file {p} does not exist")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # parse errors of three libraries
        raise UsageError(f"config file {p} could not be parsed: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"config file {p} must hold a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def resolve(cls: type[T], args: argparse.Namespace, config_file: str | None = None) -> T:
    """Build ``cls`` from its defaults, overridden by ``config_file``, overridden by flags."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    if config_file:
        from_file = load_config_file(config_file)
        unknown = sorted(set(from_file) - names)
        if unknown:
            raise UsageError(
                f"config file {config_file} has unknown option(s): {', '.join(unknown)}"
            )
        values.update(from_file)
    values.update({k: v for k, v in vars(args).items() if k in names})
    try:
        return cls(**values)
    except TypeError as exc:
        raise UsageError(str(exc)) from exc


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save(config: Any, path: Path) -> None:
    path.write_text(json.dumps(to_dict(config), indent=2, sort_keys=True) + "\n", encoding="utf-8")
