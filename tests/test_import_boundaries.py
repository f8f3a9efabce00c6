"""Who may import whom (docs/ARCHITECTURE.md), checked over every module of a package, so that a
new module or a new import anywhere in it is covered without naming it here:

- `app/` (serving) never imports torch, transformers or `training/`;
- `bundle/` (what training and serving share) imports neither side nor their heavy stacks: not
  `app`, `training`, torch, transformers, onnxruntime or fastapi.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
APP_FORBIDDEN = ("torch", "transformers", "training")
BUNDLE_FORBIDDEN = ("app", "training", "torch", "transformers", "onnxruntime", "fastapi")

# In a fresh interpreter: the test process itself has imported torch and training long ago.
# Reports, per forbidden package, the first module of the walked package whose import brought
# it in.
PROBE = """
import importlib, json, pkgutil, sys

package = importlib.import_module(sys.argv[1])
forbidden = json.loads(sys.argv[2])
modules = sorted(m.name for m in pkgutil.walk_packages(package.__path__, sys.argv[1] + "."))
culprits = {}
for name in modules:
    importlib.import_module(name)
    for top in forbidden:
        if top in sys.modules:
            culprits.setdefault(top, name)
print(json.dumps({"modules": modules, "culprits": culprits}))
"""


def probe(package: str, forbidden: tuple[str, ...]) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, package, json.dumps(forbidden)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    report: dict[str, Any] = json.loads(run.stdout.splitlines()[-1])
    return report


def test_no_app_module_imports_torch_transformers_or_training() -> None:
    report = probe("app", APP_FORBIDDEN)
    # The walk found the package (an empty walk would pass vacuously).
    assert {"app.routes", "app.service", "app.__main__"} <= set(report["modules"])
    assert report["culprits"] == {}, (
        f"app must not import the training stack; first importer per package: {report['culprits']}"
    )


def test_no_bundle_module_imports_either_side_or_their_stacks() -> None:
    report = probe("bundle", BUNDLE_FORBIDDEN)
    expected = {"manifest", "batch", "text", "qa", "extractive", "decoding"}
    assert {f"bundle.{name}" for name in expected} <= set(report["modules"])
    assert report["culprits"] == {}, (
        "bundle must import neither app nor training nor their stacks; first importer per "
        f"package: {report['culprits']}"
    )
