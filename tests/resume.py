"""Kill a training command with SIGKILL after a checkpoint, resume it, compare with a whole run.

Shared by the pretraining and fine-tuning tests: one place for the subprocess and the exactness
check, so both commands are held to the same standard.
"""

from __future__ import annotations

import functools
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]


# The command with every checkpoint's fsync slowed down, so that a kill can land while a
# checkpoint is half written (its temp folder on disk, not yet renamed): deterministic, and
# nothing in the product is changed.
_SLOW_CHECKPOINTS = """
import sys, time
import training.checkpoints as checkpoints
fsync = checkpoints._fsync_tree
def slow(path):
    time.sleep({delay})
    fsync(path)
checkpoints._fsync_tree = slow
from training.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_cli(argv: list[str], slow_checkpoint_s: float = 0.0) -> subprocess.Popen:
    """``python -m training ARGV`` in a subprocess (one thread), output captured as text;
    ``slow_checkpoint_s`` delays each checkpoint between its write and its rename."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    head = ["-c", _SLOW_CHECKPOINTS.format(delay=slow_checkpoint_s)] if slow_checkpoint_s else []
    return subprocess.Popen(
        [sys.executable, *(head or ["-m", "training"]), *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kill_after_checkpoint_then_resume(argv: list[str], out: Path, step: int, final: str) -> None:
    """Start ``argv``, SIGKILL it once ``checkpoints/step-N`` exists, check the run was really cut
    short (no ``final`` file yet), then run it again with ``--resume`` to the end."""
    proc = run_cli(argv)
    deadline = time.time() + 120
    while not (out / "checkpoints" / f"step-{step:08d}").is_dir():
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / final).exists()  # it really was cut short
    resumed = run_cli([*argv, "--resume"])
    log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, log
    assert "resuming from" in log


def assert_same_weights(a_dir: Path, b_dir: Path) -> None:
    """The two folders' model.safetensors hold bit-identical tensors."""
    a, b = load_file(a_dir / "model.safetensors"), load_file(b_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)


def kill_at_points_then_finish(
    argv: list[str], out: Path, points: list[str], final: str, seed: int = 0
) -> list[str]:
    """SIGKILL the command at each of ``points`` in turn, resuming after each, then let it finish.

    A point is ``"checkpoint-write"`` (while the next checkpoint's temp folder is on disk,
    written but not yet renamed: each checkpoint is slowed down by half a second to make that
    certain) or ``"random"`` (a seeded random moment, up to 0.4 s, after the next complete
    checkpoint appears: mid-training between checkpoints). Every kill must land before the run
    ends, and a checkpoint-write kill must leave its torn folder behind. Returns what happened at
    each point, for the report.
    """
    rng = random.Random(seed)
    seen: list[str] = []
    for n, point in enumerate(points):
        before = _complete_steps(out)
        proc = run_cli([*argv, *(["--resume"] if n else [])], slow_checkpoint_s=0.5)
        if point == "checkpoint-write":
            last = max(before, default=0)
            torn = _wait_for(out, proc, functools.partial(_temp_checkpoint, out, after=last))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert torn.is_dir(), "the kill was meant to land during the checkpoint write"
            seen.append(f"during the write of {torn.name.removeprefix('.tmp-')}")
        else:
            _wait_for(out, proc, lambda known=before: _complete_steps(out) - known)
            delay = rng.uniform(0.0, 0.4)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            seen.append(f"{delay:.2f} s after step-{max(_complete_steps(out)):08d}")
        assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill at {point}"
        assert not (out / final).exists(), f"the run finished before the kill at {point}"
    resumed = run_cli([*argv, "--resume"])
    log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, log
    started = re.search(r"resuming from \S*(step-\d+)", log)
    assert started, log
    seen.append(f"finished from {started.group(1)}")
    return seen


def _complete_steps(out: Path) -> set[int]:
    root = out / "checkpoints"
    done = root.glob("step-*") if root.is_dir() else []
    return {int(p.name.split("-")[1]) for p in done if (p / "training_state.pt").is_file()}


def _temp_checkpoint(out: Path, after: int) -> Path | None:
    """A checkpoint of a later step than ``after`` that is written but not yet renamed."""
    root = out / "checkpoints"
    for tmp in sorted(root.glob(".tmp-step-*")) if root.is_dir() else []:
        if int(tmp.name.rsplit("-", 1)[1]) > after and (tmp / "training_state.pt").is_file():
            return tmp
    return None


def _wait_for(out: Path, proc: subprocess.Popen, found: Any) -> Any:
    deadline = time.time() + 180
    while time.time() < deadline:
        hit = found()
        if hit:
            return hit
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.005)
    raise AssertionError(f"nothing to kill at in time in {out}")
