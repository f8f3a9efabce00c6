"""The serving package never imports the training stack (docs/ARCHITECTURE.md: `app/` never
imports torch, transformers or `training/`), checked over every module of `app`, so that a new
module or a new import anywhere in it is covered without naming it here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "transformers", "training")

# In a fresh interpreter: the test process itself has imported torch and training long ago.
# Reports, per forbidden package, the first `app` module whose import brought it in.
PROBE = """
import importlib, json, pkgutil, sys
import app

forbidden = json.loads(sys.argv[1])
modules = sorted(m.name for m in pkgutil.walk_packages(app.__path__, "app."))
culprits = {}
for name in modules:
    importlib.import_module(name)
    for top in forbidden:
        if top in sys.modules:
            culprits.setdefault(top, name)
print(json.dumps({"modules": modules, "culprits": culprits}))
"""


def test_no_app_module_imports_torch_transformers_or_training() -> None:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(FORBIDDEN)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.splitlines()[-1])
    # The walk found the package (an empty walk would pass vacuously).
    assert {"app.routes", "app.service", "app.__main__"} <= set(report["modules"])
    assert report["culprits"] == {}, (
        f"app must not import the training stack; first importer per package: {report['culprits']}"
    )
