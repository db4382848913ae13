"""Read what the deployment ships: rendered kustomizations, the Dockerfile, the server's routes.

Helpers only; the checks live in the test modules beside this one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
REQUIREMENTS = DEPLOY / "requirements-serve.txt"
ADAPTER_VALUES = DEPLOY / "k8s" / "prometheus-adapter" / "values.yaml"
ENV_PREFIX = "EXITSERVE_"
# Kubernetes versions the rendered manifests are validated against: the oldest this deploy
# supports (preStop `sleep`, PDB unhealthyPodEvictionPolicy) and the newest kubernetes-validate
# ships. The Makefile's deploy-check uses the same list (a test compares them).
K8S_VERSIONS = ("1.31.0", "1.37.0")
# Custom resources: no schema in kubernetes-validate; tests/deploy/test_crds.py checks them.
CRD_KINDS = frozenset(
    {
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PodMonitor"),
        ("serving.kserve.io/v1alpha1", "ServingRuntime"),
        ("serving.kserve.io/v1beta1", "InferenceService"),
    }
)
# The server's own stop margin after the drain (service/lifecycle.py) plus process exit.
EXIT_MARGIN_S = 10.0

Doc = dict[str, Any]


def tool(name: str) -> str:
    """A dev tool from the project's venv (beside this interpreter), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: `make install` puts it in .venv/bin")
    return found


def kustomizations() -> list[Path]:
    """Every kustomization under deploy/, as paths relative to the repository."""
    return sorted(p.parent.relative_to(REPO) for p in DEPLOY.rglob("kustomization.yaml"))


def render(kustomization: Path) -> list[Doc]:
    """`kubectl kustomize` output as documents (no cluster needed)."""
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(REPO / kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {kustomization} failed:\n{result.stderr}")
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d.get("kind") == kind]


def by_name(docs: list[Doc], kind: str, name: str) -> Doc:
    matches = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


@dataclass
class Workload:
    """A pod template wherever it sits (Deployment, Job, ServingRuntime) and its origin."""

    kind: str
    name: str
    pod: Doc
    containers: list[Doc] = field(default_factory=list)


def workloads(docs: list[Doc]) -> Iterator[Workload]:
    for d in docs:
        kind, name = d["kind"], d["metadata"]["name"]
        if kind in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            pod = d["spec"]["template"]["spec"]
        elif kind == "ServingRuntime":
            pod = d["spec"]
        else:
            continue
        yield Workload(kind, name, pod, list(pod.get("containers", [])))


def container_env(container: Doc, docs: list[Doc]) -> dict[str, str]:
    """The container's literal environment: envFrom ConfigMaps, then `env` values over them."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref is not None:
            env.update(by_name(docs, "ConfigMap", ref["name"]).get("data", {}))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
    return env


def env_names(container: Doc, docs: list[Doc]) -> set[str]:
    """Every variable the container gets, literal or from a Secret/field reference."""
    return set(container_env(container, docs)) | {e["name"] for e in container.get("env", [])}


def named_ports(container: Doc) -> dict[str, int]:
    return {p["name"]: int(p["containerPort"]) for p in container.get("ports", []) if "name" in p}


def cpu_cores(quantity: str | int | float) -> float:
    """A Kubernetes CPU quantity ("500m", "2", 2) in cores."""
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def duration_s(text: str) -> float:
    """A Prometheus duration such as "15s", "1m30s" in seconds."""
    match = DURATION.match(text)
    assert text, "empty duration"
    assert match, f"not a duration: {text!r}"
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


# ---- the server ----


def setting_names() -> set[str]:
    from service.settings import Settings

    return set(Settings.model_fields)


def secret_settings() -> set[str]:
    """Settings typed as secrets: they come from a Secret, never a ConfigMap."""
    from service.settings import Settings

    return {n for n, f in Settings.model_fields.items() if "SecretStr" in repr(f.annotation)}


def setting_default(name: str) -> Any:
    from service.settings import Settings

    return Settings.model_fields[name].get_default(call_default_factory=True)


def effective(env: Mapping[str, str], name: str) -> str:
    """A setting's value in a container: its variable if set, else the Settings default."""
    return env.get(ENV_PREFIX + name.upper(), str(setting_default(name)))


class _NoDataPlane:
    """Enough of a data plane to build the real app and read its routes; serves nothing."""

    metrics = None

    def serves(self, name: str) -> bool:
        return False


class AppRoutes:
    """The real app (service.app.create_app), asked which paths it routes; nothing served."""

    def __init__(self, repository: Path) -> None:
        from service.app import create_app
        from service.settings import Settings

        settings = Settings(model_repository=repository)
        self.app = create_app(settings, dataplane=_NoDataPlane())  # type: ignore[arg-type]

    def answers(self, path: str, method: str = "GET") -> bool:
        """True where the router fully matches (path and method), as for a real request."""
        from starlette.routing import Match

        scope = {
            "type": "http",
            "path": path,
            "method": method,
            "root_path": "",
            "headers": [],
            "query_string": b"",
            "app": self.app,
        }
        return any(r.matches(scope)[0] == Match.FULL for r in self.app.router.routes)


def metric_series_names() -> set[str]:
    """The exposition names of every exitserve metric (histograms: _bucket/_sum/_count)."""
    from prometheus_client import CollectorRegistry

    from service.metrics import Metrics

    registry = CollectorRegistry()
    Metrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "histogram":
            names |= {f"{family.name}{s}" for s in ("_bucket", "_sum", "_count")}
        elif family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        else:
            names.add(family.name)
    return names


# ---- the Dockerfile ----


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction]


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    return out


def dockerfile_stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages in order."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in dockerfile_instructions(text):
        if ins.keyword == "FROM":
            parts = ins.args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""
            stages.append(Stage(parts[0], name, []))
        elif not stages and ins.keyword == "ARG":
            key, _, value = ins.args.partition("=")
            args[key] = value.strip('"')
        elif stages:
            stages[-1].instructions.append(ins)
    return args, stages


def stage(stages: list[Stage], name: str) -> Stage:
    matches = [s for s in stages if s.name == name]
    assert len(matches) == 1, f"Dockerfile has no single stage {name!r}"
    return matches[0]


def env_pairs(args: str) -> dict[str, str]:
    """ENV's `K=V K2=V2` form."""
    return dict(item.split("=", 1) for item in args.split())


# ---- the dependency set ----


def pinned_requirements() -> dict[str, str]:
    """deploy/requirements-serve.txt as {canonical name: version}."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for raw in REQUIREMENTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1, f"not an exact pin: {line}"
        assert specs[0].operator == "==", f"not an exact pin: {line}"
        pins[canonicalize_name(req.name)] = specs[0].version
    return pins


def pyproject() -> dict[str, Any]:
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


# ---- .dockerignore ----


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignore_rules() -> list[tuple[bool, str, re.Pattern[str]]]:
    """(excludes, pattern, regex) in file order; the last rule matching a path or a parent
    of it decides (Docker's semantics)."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rules.append((not negated, pattern, _pattern_regex(pattern)))
    return rules


def in_build_context(relative: str, rules: list[tuple[bool, str, re.Pattern[str]]]) -> bool:
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for excludes, _, regex in rules:
        if any(regex.match(p) for p in prefixes):
            excluded = excludes
    return not excluded


def copy_build_context(target: Path) -> list[str]:
    """Copy the repository as `docker build .` sees it (honouring .dockerignore); the
    copied paths, relative."""
    rules = dockerignore_rules()
    reincluded = [p for excludes, p, _ in rules if not excludes]
    copied: list[str] = []
    for root, dirs, files in os.walk(REPO):
        here = Path(root).relative_to(REPO).as_posix()
        here = "" if here == "." else here + "/"
        # Skip excluded folders that no `!pattern` reaches into (.git, .venv, runs, ...).
        dirs[:] = [
            d
            for d in dirs
            if in_build_context(here + d, rules)
            or any(p.startswith(here + d + "/") or p.startswith("*") for p in reincluded)
        ]
        for name in files:
            relative = here + name
            if in_build_context(relative, rules):
                dest = target / relative
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / relative, dest)
                copied.append(relative)
    return copied
