"""deploy/k8s without a cluster: the manifests parse, agree with deploy/dagster.yaml, the worker
pools and the image, and only hand the pods secrets the project reads."""

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from rof_pipelines.settings import ENV_OVERRIDES, PROJECT_ROOT, WorkerPoolConfig

K8S_DIR = PROJECT_ROOT / "deploy" / "k8s"
ENV_REFERENCE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name != "values.yaml":
            docs.extend(_documents(path))
    return docs


def _values() -> dict[str, Any]:
    return _documents(K8S_DIR / "values.yaml")[0]


def _instance() -> dict[str, Any]:
    return _documents(PROJECT_ROOT / "deploy" / "dagster.yaml")[0]


def _containers(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        c
        for m in manifests
        if m["kind"] in {"Deployment", "Job"}
        for c in m["spec"]["template"]["spec"]["containers"]
    ]


def _user_deployments() -> list[dict[str, Any]]:
    return _values()["dagster-user-deployments"]["deployments"]


def _instance_env_vars(node: Any) -> set[str]:
    """Variables the Dagster instance file reads as ``{env: VAR}``."""
    if isinstance(node, dict):
        found = {node["env"]} if set(node) == {"env"} else set()
        return found.union(*(_instance_env_vars(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_instance_env_vars(value) for value in node))
    return set()


def _variables_read() -> set[str]:
    """What the project reads from the environment: settings overrides, the config file's path,
    ``${VAR}`` in config.yaml and the docs (alert channel secrets), and the instance's variables."""
    texts = [PROJECT_ROOT / "config.yaml", *(PROJECT_ROOT / "docs").glob("*.md")]
    referenced = {name for path in texts for name in ENV_REFERENCE.findall(path.read_text())}
    return set(ENV_OVERRIDES) | {"ROF_CONFIG"} | referenced | _instance_env_vars(_instance())


def _secrets() -> dict[str, set[str]]:
    return {
        doc["metadata"]["name"]: set(doc.get("stringData", {})) | set(doc.get("data", {}))
        for doc in _documents(K8S_DIR / "secrets.example.yaml")
        if doc["kind"] == "Secret"
    }


def _config_maps() -> dict[str, dict[str, str]]:
    return {m["metadata"]["name"]: m["data"] for m in _manifests() if m["kind"] == "ConfigMap"}


def _whole_secret_names() -> set[str]:
    """Secrets given to pods whole (envFrom / the chart's envSecrets)."""
    names = {s["name"] for d in _user_deployments() for s in d.get("envSecrets", [])}
    launcher = _values()["runLauncher"]["config"]["k8sRunLauncher"]
    names |= {s["name"] for s in launcher.get("envSecrets", [])}
    for container in _containers(_manifests()):
        names |= {src["secretRef"]["name"] for src in container.get("envFrom", []) if "secretRef" in src}
    return names


def _secret_key_refs() -> list[tuple[str, str, str]]:
    """(variable, secret, key) of every env entry set from one secret key."""
    entries = [e for c in _containers(_manifests()) for e in c.get("env", [])]
    entries += [e for d in _user_deployments() if isinstance(d.get("env"), list) for e in d["env"]]
    return [
        (e["name"], e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in entries
        if "secretKeyRef" in e.get("valueFrom", {})
    ]


@pytest.mark.parametrize("path", sorted(K8S_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_yaml_file_parses(path: Path) -> None:
    docs = _documents(path)
    assert docs, f"{path.name} holds no document"
    assert all(isinstance(doc, dict) for doc in docs)
    if path.name != "values.yaml":
        assert all({"apiVersion", "kind", "metadata"} <= set(doc) for doc in docs)


def test_run_queue_limits_match_the_instance_file() -> None:
    queued = _values()["dagsterDaemon"]["runCoordinator"]
    assert queued["enabled"] and queued["type"] == "QueuedRunCoordinator"
    chart = queued["config"]["queuedRunCoordinator"]
    instance = _instance()["run_coordinator"]["config"]
    assert chart["maxConcurrentRuns"] == instance["max_concurrent_runs"]
    assert chart["tagConcurrencyLimits"] == instance["tag_concurrency_limits"]


def test_storage_and_daemon_settings_match_the_instance_file() -> None:
    values, instance = _values(), _instance()
    assert (
        values["postgresql"]["postgresqlScheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]
    )
    assert values["postgresql"]["enabled"] is False
    retries, monitoring = values["dagsterDaemon"]["runRetries"], values["dagsterDaemon"]["runMonitoring"]
    assert retries == {"enabled": True, "maxRetries": instance["run_retries"]["max_retries"]}
    for chart_key, instance_key in [
        ("enabled", "enabled"),
        ("startTimeoutSeconds", "start_timeout_seconds"),
        ("cancelTimeoutSeconds", "cancel_timeout_seconds"),
        ("pollIntervalSeconds", "poll_interval_seconds"),
    ]:
        assert monitoring[chart_key] == instance["run_monitoring"][instance_key], chart_key
    assert values["pythonLogs"]["pythonLogLevel"] == instance["python_logs"]["python_log_level"]
    assert values["telemetry"]["enabled"] == instance["telemetry"]["enabled"]


def test_pods_get_only_secrets_the_project_reads() -> None:
    read, secrets = _variables_read(), _secrets()
    for name in _whole_secret_names():
        assert name in secrets, f"secret {name} is not in secrets.example.yaml"
        assert secrets[name] <= read, f"{name} sets variables nothing reads: {sorted(secrets[name] - read)}"
    refs = _secret_key_refs()
    assert refs, "no env entry comes from a secret key"
    for variable, secret, key in refs:
        assert variable in read, f"{variable} (from {secret}/{key}) is read by nothing"
        assert key in secrets.get(secret, set()), f"{secret}/{key} is not in secrets.example.yaml"


def test_secrets_example_holds_placeholders_only() -> None:
    for doc in _documents(K8S_DIR / "secrets.example.yaml"):
        for key, value in doc["stringData"].items():
            assert "<" in value and ">" in value, f"{key} looks like a real value"


def test_config_maps_set_only_variables_the_project_reads() -> None:
    read = _variables_read()
    env_maps = {s["name"] for d in _user_deployments() for s in d.get("envConfigMaps", [])}
    for container in _containers(_manifests()):
        env_maps |= {s["configMapRef"]["name"] for s in container.get("envFrom", []) if "configMapRef" in s}
    config_maps = _config_maps()
    assert env_maps, "no pod gets the project's settings"
    for name in env_maps:
        assert set(config_maps[name]) <= read, sorted(set(config_maps[name]) - read)


def test_worker_queues_are_the_worker_pools() -> None:
    pools = set(WorkerPoolConfig.model_fields)
    queues = set()
    for container in _containers(_manifests()):
        command = container["command"]
        if command[:3] == ["rof", "workers", "start"]:
            queues.add(command[command.index("--pool") + 1])
    assert queues == pools
    limits = _values()["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert {limit["value"] for limit in limits["tagConcurrencyLimits"]} == pools


def test_image_entrypoints_and_paths_exist_in_the_dockerfile() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "pip install --no-cache-dir --no-deps -e ." in dockerfile  # installs the console scripts
    for container in _containers(_manifests()):
        assert container["command"][0] in scripts, container["command"]
    dagster_home = re.search(r"DAGSTER_HOME=(\S+)", dockerfile).group(1)
    workdir = re.search(r"^WORKDIR (\S+)", dockerfile, re.MULTILINE).group(1)
    for container in [*_containers(_manifests()), *_user_deployments()]:
        mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
        assert mounts.get("dagster-instance", dagster_home) == dagster_home
        assert mounts.get("rof-data", f"{workdir}/data") == f"{workdir}/data"
    assert _config_maps()["rof-env"]["ROF_DATA_DIR"] == f"{workdir}/data"
    workspace = [
        (entry["python_module"]["module_name"], entry["python_module"]["attribute"])
        for entry in _documents(PROJECT_ROOT / "workspace.yaml")[0]["load_from"]
    ]
    for deployment in _user_deployments():
        args = deployment["dagsterApiGrpcArgs"]
        module = args[args.index("-m") + 1]
        attribute = args[args.index("-a") + 1]
        assert (module, attribute) in workspace
        source = PROJECT_ROOT / (module.replace(".", "/") + ".py")
        assert re.search(rf"^(def )?{attribute}\b", source.read_text(), re.MULTILINE), (module, attribute)
    k8s_dockerfile = (K8S_DIR / "Dockerfile").read_text()
    assert re.search(r"^FROM \$\{BASE\}", k8s_dockerfile, re.MULTILINE)
    lock = (PROJECT_ROOT / "requirements.lock").read_text()
    dagster_version = re.search(r"^dagster==(\S+)", lock, re.MULTILINE).group(1)
    integration_version = re.search(r"^dagster-postgres==(\S+)", lock, re.MULTILINE).group(1)
    assert f"dagster-k8s=={integration_version}" in k8s_dockerfile
    assert f"--version {dagster_version}" in (K8S_DIR / "values.yaml").read_text()


def test_shared_data_volume_is_read_write_many() -> None:
    claims = [m for m in _manifests() if m["kind"] == "PersistentVolumeClaim"]
    assert [c["spec"]["accessModes"] for c in claims if c["metadata"]["name"] == "rof-data"] == [
        ["ReadWriteMany"]
    ]
