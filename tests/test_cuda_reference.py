"""The GPU reference benchmark, run here on the CPU so it still works when a GPU is lent.

`benchmarks/cuda_reference.py` puts the service's batcher in front of a torch model; it runs
only where a GPU is, which CI never has. This runs it in its quick form on the CPU (tiny model,
real SST-2 sentences where present) and checks behaviour: all three systems answer at every
level, batches form under concurrency with batching on and never with it off. Speeds are the
benchmark's figures, never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quick_run_on_cpu_batches_only_with_batching_on(tmp_path: Path) -> None:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    argv = [sys.executable, "benchmarks/cuda_reference.py", "--quick", "--device", "cpu",
            "--dtype", "fp32", "--limit", "200", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "cuda_reference.json").read_text())
    rows = {(r["system"][:3], r["concurrency"]): r for r in result["rows"]}
    assert set(rows) == {(s, c) for s in ("(a)", "(b)", "(c)") for c in (1, 8)}
    assert all(r["requests"] > 0 for r in rows.values())
    assert rows[("(a)", 8)]["mean_batch"] > 1.0
    assert rows[("(b)", 8)]["mean_batch"] == 1.0
    assert rows[("(a)", 1)]["mean_batch"] == 1.0  # one client: nothing to batch with
    assert [t[0] for t in result["targets"]][:2] == ["(a) / (b)", "(a) / (c)"]
    assert (tmp_path / "cuda_reference.md").read_text().startswith("| system |")
