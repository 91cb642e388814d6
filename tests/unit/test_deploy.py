"""deploy/: every Pod template passes the "restricted" Pod Security Standard, and every
probe of a Repogate container asks the health name its question needs, one the server
registers.

The checks are the Pod Security Standards' baseline and restricted controls
(kubernetes.io/docs/concepts/security/pod-security-standards), as the Pod Security
Admission controller applies them (k8s.io/pod-security-admission/policy, Kubernetes
1.34): a field left unset where the profile allows it passes, one set to a value the
profile forbids fails. `make deploy-check` validates the same files against the API
schemas; neither runs them.
"""

from __future__ import annotations

import copy
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.served import HEALTH_NAMES, LIVENESS, READINESS

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# Kinds whose objects carry a Pod template, and where.
TEMPLATE_PATHS = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
SECCOMP_TYPES = {"RuntimeDefault", "Localhost"}
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")

Template = dict[str, Any]


def templates() -> list[tuple[str, Template]]:
    """(where, Pod template) for every object in deploy/ that has one."""
    found = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "compose.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") not in TEMPLATE_PATHS:
                continue
            template = doc
            for key in TEMPLATE_PATHS[doc["kind"]]:
                template = template[key]
            found.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", template))
    return found


def containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key, [])


def restricted_violations(template: Template) -> list[str]:
    """What keeps `template` out of a namespace enforcing the restricted profile."""
    spec, annotations = template["spec"], template.get("metadata", {}).get("annotations", {})
    pod = spec.get("securityContext", {})
    found = [f"spec.{key}" for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key)]
    found += _security_context_violations("pod", pod)
    found += [
        f"sysctl {s['name']}" for s in pod.get("sysctls", []) if s["name"] not in SAFE_SYSCTLS
    ]
    found += [
        f"volume {v['name']}" for v in spec.get("volumes", []) if not ALLOWED_VOLUMES & v.keys()
    ]
    found += [
        f"annotation {key}"
        for key, value in annotations.items()
        if key.startswith(APPARMOR_ANNOTATION)
        and value not in ("", "runtime/default")
        and not value.startswith("localhost/")
    ]
    for container in containers(spec):
        found += [f"{container['name']}: {v}" for v in _container_violations(container, pod)]
    return found


def _security_context_violations(where: str, context: dict[str, Any]) -> list[str]:
    """Checks a pod's or a container's securityContext has in common."""
    found = []
    if context.get("windowsOptions", {}).get("hostProcess"):
        found.append(f"{where} windowsOptions.hostProcess")
    selinux = context.get("seLinuxOptions", {})
    if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        found.append(f"{where} seLinuxOptions")
    if context.get("appArmorProfile", {}).get("type") == "Unconfined":
        found.append(f"{where} appArmorProfile Unconfined")
    if context.get("seccompProfile", {}).get("type", "RuntimeDefault") not in SECCOMP_TYPES:
        found.append(f"{where} seccompProfile")
    if context.get("runAsNonRoot") is False:
        found.append(f"{where} runAsNonRoot false")
    if context.get("runAsUser") == 0:
        found.append(f"{where} runAsUser 0")
    return found


def _container_violations(container: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    context = container.get("securityContext", {})
    found = _security_context_violations("container", context)
    if context.get("privileged"):
        found.append("privileged")
    if context.get("allowPrivilegeEscalation") is not False:
        found.append("allowPrivilegeEscalation not false")
    capabilities = context.get("capabilities", {})
    if "ALL" not in capabilities.get("drop", []):
        found.append("capabilities.drop lacks ALL")
    if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
        found.append("capabilities.add")
    if context.get("procMount", "Default") != "Default":
        found.append("procMount")
    if any(port.get("hostPort") for port in container.get("ports", [])):
        found.append("hostPort")
    if "seccompProfile" not in context and "seccompProfile" not in pod:
        found.append("no seccompProfile (pod or container)")
    if context.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
        found.append("runAsNonRoot not true (pod or container)")
    handlers = [container.get(probe, {}) for probe in PROBES]
    handlers += container.get("lifecycle", {}).values()
    if any(h.get(kind, {}).get("host") for h in handlers for kind in ("httpGet", "tcpSocket")):
        found.append("probe or lifecycle host")
    return found


TEMPLATES = templates()


def test_deploy_has_the_sidecar_and_shared_service_templates() -> None:
    assert {where.split(":")[1] for where, _ in TEMPLATES} >= {"Pod/orders", "Deployment/repogate"}
    assert len(TEMPLATES) >= 3


@pytest.mark.parametrize(("where", "template"), TEMPLATES, ids=[w for w, _ in TEMPLATES])
def test_every_pod_template_passes_the_restricted_profile(where: str, template: Template) -> None:
    assert restricted_violations(template) == []


def _compliant() -> Template:
    return {
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "c",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        }
    }


MUTATIONS = {
    "host network": lambda t: t["spec"].update(hostNetwork=True),
    "no seccomp": lambda t: t["spec"]["securityContext"].pop("seccompProfile"),
    "unconfined seccomp": lambda t: t["spec"]["securityContext"].update(
        seccompProfile={"type": "Unconfined"}
    ),
    "root allowed": lambda t: t["spec"]["securityContext"].pop("runAsNonRoot"),
    "uid 0": lambda t: t["spec"]["containers"][0]["securityContext"].update(runAsUser=0),
    "escalation": lambda t: t["spec"]["containers"][0]["securityContext"].pop(
        "allowPrivilegeEscalation"
    ),
    "capability added": lambda t: t["spec"]["containers"][0]["securityContext"].update(
        capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    ),
    "capabilities kept": lambda t: t["spec"]["containers"][0]["securityContext"].pop(
        "capabilities"
    ),
    "privileged": lambda t: t["spec"]["containers"][0]["securityContext"].update(privileged=True),
    "host port": lambda t: t["spec"]["containers"][0].update(
        ports=[{"containerPort": 80, "hostPort": 80}]
    ),
    "host path": lambda t: t["spec"].update(volumes=[{"name": "v", "hostPath": {"path": "/"}}]),
    "unsafe sysctl": lambda t: t["spec"]["securityContext"].update(
        sysctls=[{"name": "kernel.msgmax", "value": "1"}]
    ),
    "probe host": lambda t: t["spec"]["containers"][0].update(
        livenessProbe={"httpGet": {"host": "example.com", "port": 80}}
    ),
    "selinux user": lambda t: t["spec"]["securityContext"].update(seLinuxOptions={"user": "u"}),
    "unmasked proc": lambda t: t["spec"]["containers"][0]["securityContext"].update(
        procMount="Unmasked"
    ),
    "init container escalates": lambda t: t["spec"].update(
        initContainers=[{"name": "i", "securityContext": {"capabilities": {"drop": ["ALL"]}}}]
    ),
}


def test_the_checks_pass_a_compliant_pod() -> None:
    assert restricted_violations(_compliant()) == []


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_the_checks_catch_each_forbidden_setting(mutation: str) -> None:
    template = copy.deepcopy(_compliant())
    MUTATIONS[mutation](template)

    assert restricted_violations(template) != []


# --- probes ---------------------------------------------------------------------------


def _env(container: dict[str, Any], name: str) -> str | None:
    return next((e.get("value") for e in container.get("env", []) if e["name"] == name), None)


def asked(probe: dict[str, Any]) -> tuple[str, str]:
    """(health name, address) a gRPC or `repogate health` exec probe asks."""
    if "grpc" in probe:
        return probe["grpc"].get("service", ""), f"port {probe['grpc']['port']}"
    argv = probe["exec"]["command"]
    assert argv[:2] == ["repogate", "health"], shlex.join(argv)
    options = dict(zip(argv[2::2], argv[3::2], strict=True))
    return options.get("--service", ""), options["--listen"]


REPOGATES = [
    (f"{where}:{container['name']}", container)
    for where, template in TEMPLATES
    for container in containers(template["spec"])
    if "repogate" in container["image"]
]


def test_each_template_runs_repogate() -> None:
    assert {key.rsplit(":", 1)[0] for key, _ in REPOGATES} == {where for where, _ in TEMPLATES}


@pytest.mark.parametrize(("where", "container"), REPOGATES, ids=[w for w, _ in REPOGATES])
def test_probes_ask_liveness_and_readiness_where_repogate_listens(
    where: str, container: dict[str, Any]
) -> None:
    listen = _env(container, "REPOGATE_LISTEN")
    assert listen is not None
    where_it_listens = listen if listen.startswith("unix:") else f"port {listen.rsplit(':')[-1]}"

    questions = {probe: asked(container[probe]) for probe in PROBES}

    assert questions == {
        "startupProbe": (LIVENESS, where_it_listens),
        "livenessProbe": (LIVENESS, where_it_listens),
        "readinessProbe": (READINESS, where_it_listens),
    }
    assert {name for name, _ in questions.values()} <= set(HEALTH_NAMES)
