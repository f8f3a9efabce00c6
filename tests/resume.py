"""Kill a training command with SIGKILL after a checkpoint, resume it, compare with a whole run.

Shared by the pretraining and fine-tuning tests: one place for the subprocess and the exactness
check, so both commands are held to the same standard.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]


def run_cli(argv: list[str]) -> subprocess.Popen:
    """``python -m training ARGV`` in a subprocess (one thread), output captured as text."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "training", *argv],
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
