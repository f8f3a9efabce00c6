"""Run folders: atomic checkpoints the loop resumes from, and the refusal to mix two runs.

A run's ``--out`` holds ``run_config.json`` (its resolved options), ``checkpoints/step-N``
folders (a Hugging Face ``save_pretrained`` folder plus ``training_state.pt``: optimizer,
scheduler, loss scaler, data position and every rank's RNG states) and the final model at its
root. A checkpoint is written to a ``.tmp-`` folder, fsync'ed and renamed, so a kill at any
moment leaves either the previous checkpoint or the new one, never a torn one that is picked.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from training.errors import UsageError

if TYPE_CHECKING:
    from training.engine import Runtime

CHECKPOINTS = "checkpoints"
STATE_FILE = "training_state.pt"


def checkpoint_dirs(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first. Incomplete ones carry a ``.tmp`` prefix: never picked."""
    root = out / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _fsync_tree(path: Path) -> None:
    for f in path.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    out: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    data_state: dict,
    extra: dict,
    rt: Runtime,
) -> Path:
    """Write ``checkpoints/step-N`` atomically: a temp folder, fsync'ed, then renamed."""
    root = out / CHECKPOINTS
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    rng = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    gathered: list[Any] = [rng]
    if rt.world > 1:
        gathered = [None] * rt.world
        torch.distributed.all_gather_object(gathered, rng)
    if rt.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        model.save_pretrained(str(tmp))  # type: ignore[operator]
        torch.save(
            {
                "step": step,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "data": data_state,
                "rng": gathered,  # one per rank
                "extra": extra,
            },
            tmp / STATE_FILE,
        )
        (tmp / "trainer_state.json").write_text(
            json.dumps({"step": step, "data": data_state, **extra.get("public", {})}, indent=2)
        )
        _fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    if rt.world > 1:
        torch.distributed.barrier()
    return final


def restore_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    rank: int,
) -> tuple[int, dict, dict]:
    """Load what :func:`save_checkpoint` wrote, this rank's RNG states included.

    Returns the step, the data position and the ``extra`` dict saved with them.
    """
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    load_weights(model, path)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    rng = state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state["step"], state["data"], state["extra"]


def prune_checkpoints(out: Path, keep: int, protect: Path | None) -> None:
    dirs = checkpoint_dirs(out)
    for d in dirs[: max(0, len(dirs) - keep)]:
        if protect is None or d.resolve() != protect.resolve():
            shutil.rmtree(d, ignore_errors=True)
    for stale in (out / CHECKPOINTS).glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def load_weights(model: nn.Module, checkpoint: Path) -> None:
    """Load a checkpoint's safetensors into ``model`` in place (the optimizer keeps its params)."""
    from safetensors.torch import load_file

    missing, unexpected = model.load_state_dict(
        load_file(str(checkpoint / "model.safetensors")), strict=False
    )
    # save_pretrained drops weights tied to the embeddings; anything else missing is an error
    untied = [k for k in missing if "decoder" not in k]
    if untied or unexpected:
        raise RuntimeError(
            f"checkpoint {checkpoint} does not match the model: missing "
            f"{untied[:5]}, unexpected {unexpected[:5]}"
        )
    model.tie_weights()  # type: ignore[operator]


# --- output folders --------------------------------------------------------------------------

# Loop options that may differ when a run is resumed without it being "another run".
LOOP_MAY_CHANGE = frozenset(
    {
        "resume",
        "max_steps",
        "max_minutes",
        "progress",
        "save_every",
        "log_every",
        "eval_every",
        "threads",
        "keep_checkpoints",
    }
)


def check_output_folder(
    out: Path,
    conf: dict[str, Any],
    resume: bool,
    kind: str,
    may_change: frozenset[str] | set[str] = LOOP_MAY_CHANGE,
    ignore: tuple[str, ...] = (),
) -> None:
    """Refuse to mix runs: a folder holding another run needs a new --out (or --resume).

    ``conf`` is the run's resolved config as a dict; with --resume it must equal the saved one
    except for ``may_change``. ``ignore`` names entries that may sit in a fresh --out (caches).
    """
    run_file = out / "run_config.json"
    if run_file.is_file():
        if not resume:
            raise UsageError(
                f"{out} already holds a {kind} run: pass --resume to continue it, "
                "or choose another --out"
            )
        before = json.loads(run_file.read_text())
        changed = sorted(k for k in conf if k not in may_change and before.get(k) != conf[k])
        if changed:
            raise UsageError(
                f"{out} holds a run with other settings ({', '.join(changed)}): resume with the "
                "same arguments, or choose another --out"
            )
    elif out.is_dir() and any(p.name not in ignore for p in out.iterdir()):
        raise UsageError(f"{out} is not empty and holds no {kind} run: choose another --out")
