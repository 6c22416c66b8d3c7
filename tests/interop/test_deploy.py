"""The Kubernetes base (deploy/kubernetes) and the container image (deploy/docker), checked offline.

No cluster and no Docker daemon: the kustomization is rendered here (a renderer for exactly the
kustomize features the base uses, cross-checked with `kubectl kustomize` where kubectl exists),
every document is validated against the Kubernetes OpenAPI schemas that `kubernetes-validate`
bundles, and the references between the manifests, hubcap.toml and the Dockerfile are checked:
what a typo would break only at deploy time. hubcap.toml itself goes through `hubcap
check-config`, in the workload identity variant and in the Secret variant.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from conftest import REPO_ROOT, hubcap_binary

try:
    import kubernetes_validate
    import yaml
except ImportError as error:  # the test fails below with the install command
    kubernetes_validate = None
    yaml = None
    IMPORT_ERROR: Optional[ImportError] = error
else:
    IMPORT_ERROR = None

KUBERNETES_DIR = REPO_ROOT / "deploy" / "kubernetes"
DOCKER_DIR = REPO_ROOT / "deploy" / "docker"
INSTALL_HINT = (
    "install the test requirements: .venv/bin/pip install -r tests/interop/requirements.txt "
    "(bash scripts/test.sh does this)"
)
# The oldest Kubernetes the base supports: the preStop `sleep` action is on by default from 1.30.
MIN_KUBERNETES = (1, 30)
# What gcr.io/distroless/cc-debian12 provides besides glibc's loader: glibc and libgcc.
DISTROLESS_CC_LIBRARIES = {
    "linux-vdso.so.1",
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "libgcc_s.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
}
# The kustomization keys the renderer below implements; anything else must be implemented first.
RENDERED_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "images"}


def require_yaml_and_schemas() -> None:
    if IMPORT_ERROR is not None:
        pytest.fail(f"{IMPORT_ERROR}: {INSTALL_HINT}", pytrace=False)


# --------------------------------------------------------------------------------------------
# rendering


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    require_yaml_and_schemas()
    with path.open(encoding="utf-8") as file:
        return [document for document in yaml.safe_load_all(file) if document]


def image_name(image: str) -> str:
    """The repository part of an image reference, without tag or digest."""
    name = image.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > last_slash else name


def pod_containers(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = document.get("spec", {}).get("template", {}).get("spec", {})
    for key in ("initContainers", "containers"):
        yield from spec.get(key, [])


def render_kustomization(directory: Path) -> list[dict[str, Any]]:
    """`kustomize build` for what this base uses: its resources, with `images` applied."""
    (kustomization,) = load_yaml_documents(directory / "kustomization.yaml")
    unsupported = set(kustomization) - RENDERED_KUSTOMIZATION_KEYS
    assert not unsupported, (
        f"kustomization.yaml uses {sorted(unsupported)}: teach render_kustomization in "
        f"{Path(__file__).name} to apply it, or these tests check something else than kubectl applies"
    )
    documents = []
    for resource in kustomization["resources"]:
        path = directory / resource
        assert path.is_file(), f"kustomization.yaml lists {resource}, which does not exist"
        documents.extend(load_yaml_documents(path))
    for document in documents:
        for container in pod_containers(document):
            for image in kustomization.get("images", []):
                if image_name(container["image"]) == image["name"]:
                    name = image.get("newName", image["name"])
                    container["image"] = f"{name}:{image['newTag']}" if "newTag" in image else name
    return documents


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render_kustomization(KUBERNETES_DIR)


def only(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matching = [document for document in documents if document["kind"] == kind]
    assert len(matching) == 1, f"expected one {kind}, found {len(matching)}"
    return matching[0]


def hubcap_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    (container,) = [c for c in containers if c["name"] == "hubcap"]
    return container


def hubcap_toml_text(documents: list[dict[str, Any]]) -> str:
    return only(documents, "ConfigMap")["data"]["hubcap.toml"]


def hubcap_toml(documents: list[dict[str, Any]]) -> dict[str, Any]:
    return tomllib.loads(hubcap_toml_text(documents))


def seconds(duration: str) -> float:
    """A hubcap duration ("30s", "1m30s", "200ms") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(int(number) * units[unit] for number, unit in parts)


# --------------------------------------------------------------------------------------------
# schemas


def test_the_renderer_agrees_with_kubectl_kustomize(rendered: list[dict[str, Any]]) -> None:
    try:
        kubectl = subprocess.run(
            ["kubectl", "kustomize", str(KUBERNETES_DIR)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except FileNotFoundError:
        pytest.skip("kubectl is not installed: the built-in renderer alone is checked")
    assert kubectl.returncode == 0, kubectl.stderr
    by_name = lambda documents: {(d["kind"], d["metadata"]["name"]): d for d in documents}  # noqa: E731
    assert by_name(yaml.safe_load_all(kubectl.stdout)) == by_name(rendered)


def test_every_manifest_is_valid_for_each_supported_kubernetes_version(
    rendered: list[dict[str, Any]],
) -> None:
    require_yaml_and_schemas()
    versions = [
        version
        for version in kubernetes_validate.utils.all_versions()
        if tuple(int(part) for part in version.split(".")[:2]) >= MIN_KUBERNETES
    ]
    assert versions, f"kubernetes-validate has no schemas for Kubernetes {MIN_KUBERNETES} or later"
    secret = load_yaml_documents(KUBERNETES_DIR / "secret.example.yaml")
    for version in versions:
        for document in rendered + secret:
            # strict: an unknown or misspelt field is an error, not silently dropped.
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = f"{document['kind']} {document['metadata']['name']} {error.json_path}"
                pytest.fail(f"Kubernetes {version}: {where}: {error.message}", pytrace=False)


def test_the_base_has_every_piece_and_leaves_the_secret_template_out(
    rendered: list[dict[str, Any]],
) -> None:
    kinds = sorted(document["kind"] for document in rendered)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]
    (kustomization,) = load_yaml_documents(KUBERNETES_DIR / "kustomization.yaml")
    assert "secret.example.yaml" not in kustomization["resources"]
    (secret,) = load_yaml_documents(KUBERNETES_DIR / "secret.example.yaml")
    assert secret["kind"] == "Secret"
    for key, value in secret["stringData"].items():
        assert "<" in value and ">" in value, f"{key} must hold placeholders, not a credential"


# --------------------------------------------------------------------------------------------
# cross-references


def test_probes_and_the_service_reach_the_port_hubcap_listens_on(
    rendered: list[dict[str, Any]],
) -> None:
    listen = hubcap_toml(rendered)["http"]["listen"]
    port = int(listen.rsplit(":", 1)[1])
    container = hubcap_container(only(rendered, "Deployment"))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": port}

    def resolve(target: Any) -> int:
        return ports[target] if isinstance(target, str) else target

    probes = {
        name: container[name]["httpGet"]
        for name in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["livenessProbe"]["path"] == "/livez"
    assert probes["startupProbe"]["path"] == "/livez"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for name, probe in probes.items():
        assert resolve(probe["port"]) == port, f"{name} probes port {probe['port']}"

    service = only(rendered, "Service")
    (service_port,) = service["spec"]["ports"]
    assert resolve(service_port["targetPort"]) == port
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == service_port["port"] == port
    assert annotations["prometheus.io/path"] == "/metrics"


def test_termination_grace_outlasts_the_prestop_sleep_and_the_drain(
    rendered: list[dict[str, Any]],
) -> None:
    drain_timeout = seconds(hubcap_toml(rendered)["shutdown"]["drain_timeout"])
    pod = only(rendered, "Deployment")["spec"]["template"]["spec"]
    pre_stop = hubcap_container(only(rendered, "Deployment"))["lifecycle"]["preStop"]
    # An exec hook would need a shell or a sleep binary, which the distroless image lacks.
    assert set(pre_stop) == {"sleep"}, "preStop must use the built-in sleep action"
    sleep = pre_stop["sleep"]["seconds"]
    assert 1 <= sleep <= 15
    assert pod["terminationGracePeriodSeconds"] > sleep + drain_timeout


def test_selectors_match_the_pods_and_the_budget_keeps_two_of_three(
    rendered: list[dict[str, Any]],
) -> None:
    deployment = only(rendered, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]

    def selects_pods(selector: dict[str, str]) -> bool:
        return bool(selector) and all(pod_labels.get(k) == v for k, v in selector.items())

    assert deployment["spec"]["replicas"] == 3
    assert selects_pods(deployment["spec"]["selector"]["matchLabels"])
    assert selects_pods(only(rendered, "Service")["spec"]["selector"])
    budget = only(rendered, "PodDisruptionBudget")["spec"]
    assert selects_pods(budget["selector"]["matchLabels"])
    assert budget["maxUnavailable"] == 1


def test_the_config_map_and_the_secret_are_mounted_where_hubcap_reads_them(
    rendered: list[dict[str, Any]],
) -> None:
    deployment = only(rendered, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = hubcap_container(deployment)
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    assert set(mounts) <= set(volumes), "every mount names a volume"
    assert all(mount.get("readOnly") for mount in mounts.values())

    config_map = only(rendered, "ConfigMap")
    (config,) = [v for v in volumes.values() if "configMap" in v]
    assert config["configMap"]["name"] == config_map["metadata"]["name"]
    args = container["args"]
    config_path = Path(args[args.index("--config") + 1])
    assert str(config_path.parent) == mounts[config["name"]]["mountPath"]
    assert config_path.name in config_map["data"]

    (secret,) = load_yaml_documents(KUBERNETES_DIR / "secret.example.yaml")
    (secret_volume,) = [v for v in volumes.values() if "secret" in v]
    assert secret_volume["secret"]["secretName"] == secret["metadata"]["name"]
    # The workload identity variant runs without the Secret.
    assert secret_volume["secret"]["optional"] is True
    secret_dir = mounts[secret_volume["name"]]["mountPath"]
    secret_files = re.findall(r'connection_string_file = "([^"]+)"', hubcap_toml_text(rendered))
    assert secret_files, "hubcap.toml shows the Secret variant's connection_string_file lines"
    for path in secret_files:
        assert str(Path(path).parent) == secret_dir, f"{path} is not under the Secret's mount"
        assert Path(path).name in secret["stringData"], f"the Secret has no key {Path(path).name}"


def test_every_variable_hubcap_toml_uses_is_set_in_the_container(
    rendered: list[dict[str, Any]],
) -> None:
    uncommented = "\n".join(
        line for line in hubcap_toml_text(rendered).splitlines() if not line.lstrip().startswith("#")
    )
    variables = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", uncommented))
    container = hubcap_container(only(rendered, "Deployment"))
    defined = {variable["name"] for variable in container.get("env", [])}
    assert variables <= defined, f"hubcap.toml needs {sorted(variables - defined)}"
    assert "POD_NAME" in variables, "owner_id should be the pod name"


def test_the_pod_is_non_root_read_only_and_without_capabilities(
    rendered: list[dict[str, Any]],
) -> None:
    pod = only(rendered, "Deployment")["spec"]["template"]["spec"]
    pod_security = pod["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] != 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    container_security = hubcap_container(only(rendered, "Deployment"))["securityContext"]
    assert container_security["allowPrivilegeEscalation"] is False
    assert container_security["readOnlyRootFilesystem"] is True
    assert container_security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in container_security["capabilities"]
    container = hubcap_container(only(rendered, "Deployment"))
    assert set(container["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])


def test_workload_identity_connects_the_pod_the_service_account_and_hubcap_toml(
    rendered: list[dict[str, Any]],
) -> None:
    template = only(rendered, "Deployment")["spec"]["template"]
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    account = only(rendered, "ServiceAccount")
    assert template["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert "azure.workload.identity/client-id" in account["metadata"]["annotations"]
    config = hubcap_toml(rendered)
    assert config["checkpoint_store"]["type"] == "azure_blob"
    assert config["sink"]["type"] == "avro_blob"
    for section in ("eventhub", "checkpoint_store", "sink"):
        assert config[section]["credential"] == {"type": "workload_identity"}, section


# --------------------------------------------------------------------------------------------
# hubcap check-config on the ConfigMap's hubcap.toml


def check_config(toml_text: str, tmp_path: Path, env: dict[str, str]) -> None:
    binary = hubcap_binary()
    if not binary.is_file():
        pytest.fail(f"{binary} is not built: run `cargo build` (or bash scripts/test.sh)", pytrace=False)
    path = tmp_path / "hubcap.toml"
    path.write_text(toml_text, encoding="utf-8")
    result = subprocess.run(
        [str(binary), "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), **env},
    )
    assert result.returncode == 0, f"hubcap check-config:\n{result.stdout}{result.stderr}"


def test_the_config_map_hubcap_toml_passes_check_config(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    check_config(hubcap_toml_text(rendered), tmp_path, {"POD_NAME": "hubcap-7d9f8b6c4d-x2x7q"})


def secret_variant(toml_text: str, secret_dir: str, local_dir: Path) -> str:
    """hubcap.toml switched to the Secret, as its comments say: each section's
    fully_qualified_namespace/account_url + credential replaced by its connection_string_file."""
    lines = []
    for line in toml_text.splitlines():
        stripped = line.strip()
        if re.match(r"(fully_qualified_namespace|account_url|credential) =", stripped):
            continue
        if stripped.startswith("# connection_string_file ="):
            line = stripped.removeprefix("# ").replace(secret_dir, str(local_dir))
        lines.append(line)
    return "\n".join(lines) + "\n"


def test_the_secret_variant_of_hubcap_toml_passes_check_config(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    deployment = only(rendered, "Deployment")
    (mount,) = [
        m for m in hubcap_container(deployment)["volumeMounts"] if m["name"] == "secrets"
    ]
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    # Values in the Secret's format; the keys are the Secret's.
    (secret,) = load_yaml_documents(KUBERNETES_DIR / "secret.example.yaml")
    examples = {
        "eventhub-connection-string": "Endpoint=sb://example-namespace.servicebus.windows.net/;"
        "SharedAccessKeyName=listen;SharedAccessKey=c2VjcmV0;EntityPath=telemetry",
        "storage-connection-string": "DefaultEndpointsProtocol=https;AccountName=examplestorage;"
        "AccountKey=c2VjcmV0;EndpointSuffix=core.windows.net",
    }
    assert set(examples) == set(secret["stringData"])
    for key, value in examples.items():
        (secrets_dir / key).write_text(value + "\n", encoding="utf-8")
    text = secret_variant(hubcap_toml_text(rendered), mount["mountPath"], secrets_dir)
    assert "workload_identity" not in text
    check_config(text, tmp_path, {"POD_NAME": "hubcap-7d9f8b6c4d-x2x7q"})


# --------------------------------------------------------------------------------------------
# the container image


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or (not pending and not line.strip()):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        keyword, _, arguments = text.partition(" ")
        instructions.append((keyword.upper(), " ".join(arguments.split())))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def exec_form(arguments: str) -> list[str]:
    require_yaml_and_schemas()
    value = yaml.safe_load(arguments)  # a JSON array is a YAML flow sequence
    assert isinstance(value, list), f"use the exec (JSON array) form, found {arguments!r}"
    return value


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions:
        if instruction[0] == "FROM":
            result.append([])
        assert result, "the first instruction must be FROM"
        result[-1].append(instruction)
    return result


def test_the_image_is_built_in_one_stage_and_run_as_non_root_in_another(
    rendered: list[dict[str, Any]],
) -> None:
    builder, runtime = stages(dockerfile_instructions(DOCKER_DIR / "Dockerfile"))
    builder_from = builder[0][1].split()
    assert builder_from[1:] == ["AS", "builder"] or builder_from[1:] == ["as", "builder"]
    assert builder_from[0].startswith("rust:")
    runs = " ".join(arguments for keyword, arguments in builder if keyword == "RUN")
    assert "cargo build --release --locked -p hubcap" in runs

    runtime_image = runtime[0][1].split()[0]
    assert runtime_image.startswith(("gcr.io/distroless/cc-debian12", "debian:bookworm-slim"))
    copies = [arguments.split() for keyword, arguments in runtime if keyword == "COPY"]
    binary = "/usr/local/bin/hubcap"
    assert ["--from=builder", "/out/hubcap", binary] in copies

    deployment = only(rendered, "Deployment")
    container = hubcap_container(deployment)
    (user,) = [arguments for keyword, arguments in runtime if keyword == "USER"]
    uid, _, gid = user.partition(":")
    # Numeric, or runAsNonRoot cannot verify it.
    assert uid.isdigit() and int(uid) != 0, f"USER {user}"
    assert int(uid) == deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    if gid:
        assert int(gid) == deployment["spec"]["template"]["spec"]["securityContext"]["runAsGroup"]

    (entrypoint,) = [exec_form(a) for keyword, a in runtime if keyword == "ENTRYPOINT"]
    (command,) = [exec_form(a) for keyword, a in runtime if keyword == "CMD"]
    assert entrypoint == [binary] == container["command"]
    assert command == ["run", "--config", "/etc/hubcap/hubcap.toml"] == container["args"]
    (exposed,) = [arguments for keyword, arguments in runtime if keyword == "EXPOSE"]
    assert [int(exposed.split("/")[0])] == [p["containerPort"] for p in container["ports"]]
    assert image_name(container["image"]) != "hubcap", "kustomization.yaml sets the image"


def test_the_builder_toolchain_satisfies_the_workspace_rust_version() -> None:
    builder = stages(dockerfile_instructions(DOCKER_DIR / "Dockerfile"))[0]
    tag = builder[0][1].split()[0].split(":", 1)[1]
    toolchain = tuple(int(part) for part in re.match(r"(\d+)\.(\d+)", tag).groups())
    workspace = tomllib.loads((REPO_ROOT / "Cargo.toml").read_text(encoding="utf-8"))
    required = workspace["workspace"]["package"]["rust-version"]
    assert toolchain >= tuple(int(part) for part in required.split(".")[:2])


def test_no_secret_is_baked_into_the_image() -> None:
    secretive = re.compile(
        r"(password|secret|token|sharedaccesskey|accountkey|connection_?string)", re.IGNORECASE
    )
    for keyword, arguments in dockerfile_instructions(DOCKER_DIR / "Dockerfile"):
        if keyword in {"ENV", "ARG", "LABEL"}:
            assert not secretive.search(arguments), f"{keyword} {arguments}"
        if keyword == "ADD":
            pytest.fail(f"ADD {arguments}: use COPY (ADD fetches URLs and unpacks archives)")


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves `path` (relative to the context) out: the last matching pattern
    wins, `!` re-includes, and a pattern that matches a directory excludes what is under it."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").strip("/")
        regex = re.escape(glob).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def test_the_dockerignore_keeps_what_cargo_needs_and_drops_local_state() -> None:
    patterns = [
        line.strip()
        for line in (DOCKER_DIR / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    needed = ["Cargo.toml", "Cargo.lock", "src/main.rs", "src/sink/avro.rs"]
    needed += ["emulator/Cargo.toml", "emulator/src/lib.rs", "bench/Cargo.toml"]
    for path in needed:
        assert not dockerignore_excludes(patterns, path), f"the build needs {path}"
    for path in [
        ".git/config",
        "target/debug/hubcap",
        "emulator/target/x",
        ".venv/bin/python",
        "node_modules/azurite/package.json",
        "hubcap-demo/capture/a.avro",
        "deploy/kubernetes/secret.example.yaml",
    ]:
        assert dockerignore_excludes(patterns, path), f"{path} must stay out of the context"
    # The matcher itself, on Docker's documented examples.
    assert dockerignore_excludes(["*/temp*"], "somedir/temporary.txt")
    assert not dockerignore_excludes(["*/temp*"], "temporary.txt")
    assert dockerignore_excludes(["**/*.go"], "a/b/c.go")
    assert not dockerignore_excludes(["*.md", "!README.md"], "README.md")


def test_the_binary_needs_only_libraries_the_distroless_cc_image_has() -> None:
    binary = hubcap_binary()
    if not binary.is_file():
        pytest.fail(f"{binary} is not built: run `cargo build` (or bash scripts/test.sh)", pytrace=False)
    try:
        ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        pytest.fail("ldd is missing: apt-get install libc-bin", pytrace=False)
    assert ldd.returncode == 0, ldd.stderr
    libraries = {Path(line.split()[0]).name for line in ldd.stdout.splitlines() if line.strip()}
    assert libraries, ldd.stdout
    assert libraries <= DISTROLESS_CC_LIBRARIES, (
        f"{sorted(libraries - DISTROLESS_CC_LIBRARIES)} are not in gcr.io/distroless/cc-debian12: "
        "change the runtime image in deploy/docker/Dockerfile"
    )
