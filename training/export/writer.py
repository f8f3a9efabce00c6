"""The one way a bundle is written, whatever the task: the checks made before any slow step, a
staging folder beside ``--out``, the task's graphs and their parity gate, the tokenizer files, the
manifest (sizes and checksums of every file), a read-back as the app reads it, and the rename
into place. A task supplies only :class:`Contents`: its graphs, parity and manifest fields."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bundle.manifest as bundle_schema
from bundle.manifest import FileEntry, Manifest, ParityReport, TokenizerSpec, VariantSpec
from training.errors import TrainingError, UsageError
from training.export.checkpoint import (
    Checkpoint,
    inspect_checkpoint,
    read_report,
    source_info,
    versions,
)
from training.export.graph import check_opset
from training.export.options import ExportConfig

log = logging.getLogger("training.export")  # one logger name for the whole command

VARIANTS: tuple[bundle_schema.VariantName, ...] = ("fp32", "int8", "fp16")
PROVIDER_OF_VARIANT: dict[str, bundle_schema.Provider] = {
    "fp32": "CPUExecutionProvider",
    "int8": "CPUExecutionProvider",
    "fp16": "CUDAExecutionProvider",
}


class ParityError(TrainingError):
    """A requested variant failed the parity gate; nothing was written."""

    exit_code = 4


GATE_MISS_EXIT = 5  # the bundle was written without a variant that missed its gate


@dataclass
class Contents:
    """One export's bundle as its task describes it; :func:`write_bundle` does the rest."""

    conf: ExportConfig
    ckpt: Checkpoint
    started: float  # time.perf_counter() when the export began
    # Writes the requested variants' graphs into the (staging) folder it is given, checks their
    # parity, and returns their manifest entries (made by :func:`variant_spec`).
    graphs: Callable[[Path], dict[bundle_schema.VariantName, VariantSpec]]
    # (tokenizers.Tokenizer with the bundle's truncation, its spec); translation may add the
    # target side's, where its vocabulary is another
    tokenizer: tuple[Any, TokenizerSpec]
    target_tokenizer: tuple[Any, TokenizerSpec] | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # the manifest's fields of this task only


def check_request(
    conf: ExportConfig, task: str | None, positive: dict[str, int | None]
) -> Checkpoint:
    """What every export checks before any slow step: the required flags, the ``positive`` ones
    (flag -> value; None: unset), the checkpoint (of ``task``, where given), ``--out`` and
    ``--opset``."""
    if not conf.checkpoint:
        raise UsageError("--checkpoint DIR is required")
    if not conf.out:
        raise UsageError("--out DIR is required (e.g. models/NAME)")
    if min(v for v in positive.values() if v is not None) < 1:
        *first, last = positive
        raise UsageError(f"{', '.join(first)} and {last} must be positive")
    ckpt = inspect_checkpoint(conf.checkpoint, task)
    check_out(Path(conf.out), conf.overwrite)
    check_opset(conf.opset)
    return ckpt


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out that holds another bundle (unless --overwrite) or any other files."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    manifest = out / bundle_schema.MANIFEST_FILE
    if not manifest.is_file():
        raise UsageError(f"--out {out} is not empty and holds no bundle; choose another folder")
    if not overwrite:
        try:
            held = json.loads(manifest.read_text(encoding="utf-8"))
            what = (
                f"the bundle {held.get('name')!r} (from {held.get('source', {}).get('checkpoint')})"
            )
        except (OSError, ValueError, AttributeError):
            what = "a bundle"
        raise UsageError(f"--out {out} already holds {what}; pass --overwrite to replace it")


def parse_variants(raw: str | list[str] | None, gpu: bool) -> list[bundle_schema.VariantName]:
    """``--variants`` in the order of :data:`VARIANTS` (default: fp32,int8, and fp16 on a GPU)."""
    if raw is None:
        return ["fp32", "int8", "fp16"] if gpu else ["fp32", "int8"]
    items = raw if isinstance(raw, list) else raw.split(",")
    names = [s.strip() for s in items if s.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise UsageError(f"--variants {raw!r}: choose from {','.join(VARIANTS)}")
    return [v for v in VARIANTS if v in names]


def graph_file(path: Path) -> dict[str, Any]:
    """A written graph's name, size and sha256, as its manifest entry records them."""
    return {
        "file": path.name,
        "size_bytes": path.stat().st_size,
        "sha256": bundle_schema.sha256_file(path),
    }


def variant_spec(
    path: Path, precision: bundle_schema.VariantName, opset: int, **fields: Any
) -> VariantSpec:
    """The manifest entry of a variant whose (encoder) graph is ``path``: what every task records
    (file, size, checksum, precision, provider, opset) and the task's own ``fields``."""
    return VariantSpec(
        **graph_file(path),
        precision=precision,
        provider=PROVIDER_OF_VARIANT[precision],
        opset=opset,
        **fields,
    )


def write_bundle(contents: Contents) -> Manifest:
    """Write the bundle of ``contents`` to ``--out``, all or nothing: in a staging folder beside
    it, renamed into place only once every variant passed its gate and the bundle loads."""
    out = Path(contents.conf.out)
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it private; a bundle is shared
    try:
        specs = contents.graphs(staging)
        misses = _gate_misses(specs, contents.conf.on_gate_miss)
        _drop_unlisted_graphs(staging, specs)
        manifest = _manifest(contents, specs, _write_tokenizers(contents, staging), misses)
        bundle_schema.write_manifest(manifest, staging)
        try:  # read it back exactly as the app will
            bundle_schema.load_bundle(staging, variant=manifest.default_variant)
        except bundle_schema.BundleError as exc:
            raise TrainingError(f"the written bundle does not load: {exc}") from exc
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("bundle %s written in %.1f s", out, time.perf_counter() - contents.started)
    return manifest


def _gate_misses(
    specs: dict[bundle_schema.VariantName, VariantSpec], on_miss: str
) -> dict[bundle_schema.VariantName, ParityReport]:
    """Take the variants that missed their gate out of ``specs`` and return their reports;
    raise :class:`ParityError` instead when ``on_miss`` is ``fail``, fp32 missed, or nothing
    would be left."""
    failed = {v: s.parity for v, s in specs.items() if s.parity.status == "failed"}
    if not failed:
        return {}
    summary = "; ".join(f"{v}: {', '.join(r.failures)}" for v, r in failed.items())
    if on_miss == "fail" or "fp32" in failed or len(failed) == len(specs):
        raise ParityError(
            f"parity gate failed, bundle not written ({summary}); relax the threshold or "
            "ask for fewer --variants"
        )
    for v in failed:
        del specs[v]
    log.warning(
        "parity gate: %s left out of the bundle (%s); it serves %s. Exit status %d says so; "
        "--on-gate-miss fail refuses to write the bundle instead",
        ", ".join(failed),
        summary,
        ", ".join(specs),
        GATE_MISS_EXIT,
    )
    return failed


def _drop_unlisted_graphs(
    folder: Path, specs: dict[bundle_schema.VariantName, VariantSpec]
) -> None:
    """Remove the graphs no variant lists: the fp32 ones the others were made from, when fp32
    itself was not asked for."""
    listed = {s.file for s in specs.values()} | {
        s.decoder.file for s in specs.values() if s.decoder
    }
    for graph in folder.glob("*.onnx"):
        if graph.name not in listed:
            graph.unlink()


def _write_tokenizers(contents: Contents, folder: Path) -> list[FileEntry]:
    """Save the tokenizer(s) with the bundle's settings, copy their config files from the
    checkpoint; their manifest entries."""
    files = []
    for tok, spec in filter(None, (contents.tokenizer, contents.target_tokenizer)):
        tok.save(str(folder / spec.file))
        files.append(bundle_schema.file_entry(folder, spec.file))
        if spec.config_file:
            shutil.copyfile(contents.ckpt.path / spec.config_file, folder / spec.config_file)
            files.append(bundle_schema.file_entry(folder, spec.config_file))
    return files


def _manifest(
    contents: Contents,
    specs: dict[bundle_schema.VariantName, VariantSpec],
    files: list[FileEntry],
    gate_misses: dict[bundle_schema.VariantName, ParityReport],
) -> Manifest:
    conf, ckpt, tspec = contents.conf, contents.ckpt, contents.tokenizer[1]
    target = contents.target_tokenizer
    return Manifest(
        name=conf.name or Path(conf.out).resolve().name,
        task=ckpt.task,
        max_seq_length=tspec.max_length,
        tokenizer=tspec,
        target_tokenizer=target[1] if target is not None else None,
        variants=specs,
        gate_misses=gate_misses,
        default_variant="fp32" if "fp32" in specs else next(iter(specs)),
        files=files,
        evaluation=read_report(ckpt.path, conf.report),
        source=source_info(ckpt),
        versions=versions(),
        created_at=datetime.now(UTC),
        **contents.fields,
    )


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename the finished bundle to ``out``; an old bundle there is removed only afterwards."""
    old = None
    if out.exists():
        if any(out.iterdir()):
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
        else:
            out.rmdir()
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
