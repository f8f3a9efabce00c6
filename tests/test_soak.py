"""The soak benchmark as CI runs it: one minute of mixed traffic against a real `python -m app`.

Behaviour only: every request is answered without an error, on every task, and the result files
are written. Latency and memory are reported by the benchmark (soak.md), never asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_one_minute_of_mixed_traffic_has_no_errors(tmp_path: Path) -> None:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    argv = [sys.executable, "benchmarks/soak.py", "--quick", "--concurrency", "4",
            "--threads", "1", "--limit", "300", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "soak.json").read_text())
    assert result["requests"] > 100 and result["errors"] == {}
    assert set(result["per_task"]) == {"classification", "qa", "fill-mask"}
    assert all(t["requests"] > 0 and t["errors"] == 0 for t in result["per_task"].values())
    assert len(result["windows"]) >= 3 and len(result["rss_kb"]["windows"]) >= 3
    print((tmp_path / "soak.md").read_text())
