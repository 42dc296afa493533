"""Static checks of deploy/: the compose file, the Kubernetes manifests, the Dockerfile and the
configs they ship, validated with the auditor's own config loaders; no secret in any file."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from auditor.config import AuditConfig, load_config
from auditor.scheduler.config import ScheduleConfig, load_schedule

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
K8S = DEPLOY / "k8s"
SECRETS_TEMPLATE = K8S / "secrets.example.yaml"
PLACEHOLDER = re.compile(r"^<[A-Z_]+>$|<[A-Z_]+>|\.\.\.")
LONG_RUNNING = {"postgres", "mlflow", "scheduler", "dashboard"}
MANIFEST_KINDS = {
    "Namespace", "ConfigMap", "PersistentVolumeClaim", "Job", "CronJob", "Deployment", "Service",
}  # fmt: skip


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def manifests(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def applied() -> list[dict[str, Any]]:
    """Every document `kubectl apply -k deploy/k8s` applies."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in manifests(K8S / name)]


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping in a YAML tree."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if doc["kind"] in ("Job", "Deployment"):
        return [spec["template"]["spec"]]
    return []


# --- compose --------------------------------------------------------------------------------


def test_compose_has_the_services_with_health_checks_and_volumes():
    services = compose()["services"]
    assert set(services) == LONG_RUNNING | {"migrate"}
    for name in LONG_RUNNING:
        test = services[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
    assert services["scheduler"]["command"][:2] == ["auditor", "schedule"]
    assert "healthz" in " ".join(services["scheduler"]["healthcheck"]["test"])
    assert services["dashboard"]["command"][:3] == ["streamlit", "run", "dashboards/app.py"]
    assert any(p.endswith(":8501") for p in services["dashboard"]["ports"])
    assert services["migrate"]["command"] == ["auditor", "db", "upgrade"]
    assert (
        services["scheduler"]["depends_on"]["migrate"]["condition"]
        == "service_completed_successfully"
    )
    declared = set(compose()["volumes"])
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith((".", "/", "$")):
                assert source in declared, (name, source)
    assert {"pgdata", "mlflow-artifacts", "auditor-data"} <= declared


def test_compose_secrets_are_files_outside_git():
    document = compose()
    declared = document["secrets"]
    for name, service in document["services"].items():
        used = [s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])]
        assert set(used) <= set(declared), name
        for variable, value in (service.get("environment") or {}).items():
            if variable.endswith("_FILE"):
                assert value.removeprefix("/run/secrets/") in used, (name, variable)
    for secret in declared.values():
        assert secret["file"].startswith("./secrets/")
    assert (DEPLOY / "secrets" / ".gitignore").read_text().splitlines()[-2:] == ["*", "!.gitignore"]


def test_scheduler_stop_grace_exceeds_the_audit_grace():
    schedule = load_schedule(DEPLOY / "config" / "schedule.yaml")
    stop = compose()["services"]["scheduler"]["stop_grace_period"]
    assert re.fullmatch(r"\d+m", stop) and int(stop[:-1]) * 60 > schedule.shutdown_grace_s
    assert schedule.health.port == 8080 and schedule.jobstore_url.startswith("sqlite:////data/")


@pytest.mark.parametrize("path", sorted((DEPLOY / "config" / "audits").glob("*.yaml")), ids=str)
def test_shipped_audit_configs_validate(path):
    config = load_config(path)
    for sink in config.alerts.sinks:  # secrets by environment variable name only
        assert sink.type == "log" or (getattr(sink, "url_env", None) or sink.password_env)


def test_shipped_schedule_names_existing_audit_configs():
    for job in load_schedule(DEPLOY / "config" / "schedule.yaml").jobs:
        assert job.config.is_file(), job.config


# --- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_runs_as_a_user_with_cpu_torch_by_default():
    lines = [line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in instructions
    assert "ARG TORCH_VERSION=2.13.0" in instructions
    assert any(
        '"torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"' in i for i in instructions
    )
    assert any(
        "--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu" in line for line in lines
    )
    entrypoint = DEPLOY / "docker-entrypoint.sh"
    assert entrypoint.stat().st_mode & 0o111 and "COPY deploy/docker-entrypoint.sh" in " ".join(
        instructions
    )


# --- Kubernetes -----------------------------------------------------------------------------


def test_every_manifest_is_a_kubernetes_object_of_the_expected_kinds():
    objects = sorted(set(K8S.glob("*.yaml")) - {K8S / "kustomization.yaml"})
    for doc in (doc for path in objects for doc in manifests(path)):
        assert {"apiVersion", "kind", "metadata"} <= doc.keys()
        assert doc["metadata"]["name"]
    kinds = {doc["kind"] for doc in applied()}
    assert kinds == MANIFEST_KINDS
    assert {doc["kind"] for doc in manifests(SECRETS_TEMPLATE)} == {"Secret"}
    assert "Secret" not in kinds  # Secrets are created out of band, from the template's keys
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", SECRETS_TEMPLATE.name}
    assert listed == on_disk


def test_referenced_secrets_and_config_maps_exist():
    templates = {doc["metadata"]["name"]: doc["stringData"] for doc in manifests(SECRETS_TEMPLATE)}
    config_maps = {
        doc["metadata"]["name"]: doc["data"] for doc in applied() if doc["kind"] == "ConfigMap"
    }
    claims = {
        doc["metadata"]["name"] for doc in applied() if doc["kind"] == "PersistentVolumeClaim"
    }
    secret_refs = config_refs = 0
    for doc in applied():
        for node in walk(doc):
            if "secretKeyRef" in node:
                ref = node["secretKeyRef"]
                assert ref["key"] in templates[ref["name"]], ref
                secret_refs += 1
            if "configMapKeyRef" in node:
                ref = node["configMapKeyRef"]
                assert ref["key"] in config_maps[ref["name"]], ref
                config_refs += 1
            if "secretName" in node:
                for item in node.get("items", []):
                    assert item["key"] in templates[node["secretName"]], item
                secret_refs += 1
            if "configMap" in node and isinstance(node["configMap"], dict):
                volume = node["configMap"]
                for item in volume.get("items", []):
                    assert item["key"] in config_maps[volume["name"]], item
            if "persistentVolumeClaim" in node:
                assert node["persistentVolumeClaim"]["claimName"] in claims
    assert secret_refs >= 5 and config_refs >= 2
    for values in templates.values():
        assert all(PLACEHOLDER.search(v) for v in values.values()), values


def test_configmap_holds_valid_schedule_and_audit_configs(tmp_path):
    [config_map] = [doc for doc in applied() if doc["kind"] == "ConfigMap"]
    schedule = ScheduleConfig.model_validate(yaml.safe_load(config_map["data"]["schedule.yaml"]))
    for job in schedule.jobs:
        AuditConfig.model_validate(yaml.safe_load(config_map["data"][job.config.name]))
    [cronjob] = [doc for doc in applied() if doc["kind"] == "CronJob"]
    pod = pod_specs(cronjob)[0]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert pod["terminationGracePeriodSeconds"] > schedule.shutdown_grace_s
    args = pod["containers"][0]["args"]
    assert args[:2] == ["auditor", "schedule"] and "--once" in args


def test_pods_run_as_non_root_and_the_dashboard_is_served():
    for doc in applied():
        for pod in pod_specs(doc):
            assert pod["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
            assert pod["securityContext"]["runAsUser"] != 0
            for container in pod["containers"]:
                assert container["securityContext"]["allowPrivilegeEscalation"] is False
    [deployment] = [doc for doc in applied() if doc["kind"] == "Deployment"]
    [service] = [doc for doc in applied() if doc["kind"] == "Service"]
    container = pod_specs(deployment)[0]["containers"][0]
    assert container["args"][:3] == ["streamlit", "run", "dashboards/app.py"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/_stcore/health"
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["ports"][0]["port"] == 8501


# --- no secrets -----------------------------------------------------------------------------

SECRET_PATTERNS = [
    re.compile(r"://[^/\s:@'\"]+:(?P<value>[^@\s'\"]+)@"),  # user:password@ in a URL
    re.compile(
        r"(?i)(?:password|passwd|secret|token|api_?key)[\"']?\s*[:=]\s*[\"']?(?P<value>[^\s\"'`,})]+)"
    ),
    re.compile(r"-----BEGIN (?P<value>[A-Z ]*PRIVATE KEY)-----"),
    re.compile(r"https://hooks\.slack\.com/services/(?P<value>\S+)"),
]
ALLOWED_VALUES = re.compile(
    r"^(%s|<[A-Z_]+>|\.\.\.|'\.\.\.'|\*\*\*|\$\w+|\$\{?\w+\}?|/run/secrets/\w+|\./[\w./-]+|[A-Z][A-Z0-9_]*)$"
)  # placeholders (also printf %s, the *** of a redacted value), variables, secret-file paths,
# environment variable names


def secret_like(line: str) -> list[str]:
    """The values in `line` that look like a literal secret."""
    return [
        match.group("value")
        for pattern in SECRET_PATTERNS
        for match in pattern.finditer(line)
        if not ALLOWED_VALUES.match(match.group("value"))
    ]


@pytest.mark.parametrize(
    "line",
    [
        'url: "postgresql+psycopg://auditor:hunter2@db:5432/auditor"',
        "POSTGRES_PASSWORD: s3cret-value",
        "smtp-password: 'correct horse'",
        "-----BEGIN RSA PRIVATE KEY-----",
        "webhook: https://hooks.slack.com/services/T000/B000/XXXX",
    ],
)
def test_the_secret_scan_catches_literal_secrets(line):
    assert secret_like(line)


def test_no_literal_password_like_values_in_deploy():
    found = [
        f"{path.relative_to(DEPLOY)}:{number}: {line.strip()}"
        for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file())
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if secret_like(line)
    ]
    assert not found, "\n".join(found)
