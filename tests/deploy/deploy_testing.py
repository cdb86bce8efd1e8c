"""Helpers shared by the deployment tests (tests/deploy/*_test.py).

The tests run under CTest with Debian's /usr/bin/python3 and python3-yaml. CTest passes the
source tree and the built binaries in the environment:
  DARTSERVE_SOURCE_DIR  the repository root (default: two levels above this file)
  DARTSERVE_SERVER      the built dartserve binary
  DARTSERVE_CLIENT      the built dartserve-client binary
"""

import json
import os
import pathlib
import queue
import re
import shlex
import shutil
import signal
import subprocess
import threading

import yaml

SOURCE_DIR = pathlib.Path(
    os.environ.get("DARTSERVE_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
DEPLOY_DIR = SOURCE_DIR / "deploy"
K8S_DIR = DEPLOY_DIR / "k8s"
K8S_BASE_DIR = K8S_DIR / "base"
PROMETHEUS_DIR = DEPLOY_DIR / "prometheus"
GRAFANA_DIR = DEPLOY_DIR / "grafana"
FLAGS_FILE = K8S_BASE_DIR / "dartserve.flags"
DASHBOARD_FILE = GRAFANA_DIR / "dashboards" / "dartserve.json"
ADAPTER_CONFIG_FILE = K8S_DIR / "prometheus-adapter-config.yaml"


def binary(variable):
    """The path in environment variable `variable`; raises if unset or not executable."""
    path = os.environ.get(variable, "")
    if not path or not os.access(path, os.X_OK):
        raise RuntimeError(f"{variable} must name a built executable (got {path!r}); "
                           "run this test through CTest")
    return path


def load_yaml_documents(path):
    """Every non-empty YAML document in `path`."""
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def kustomization(directory=K8S_BASE_DIR):
    return load_yaml_documents(directory / "kustomization.yaml")[0]


def kustomization_dirs():
    """Every folder under deploy/k8s/ that holds a kustomization.yaml, sorted."""
    return sorted(path.parent for path in K8S_DIR.rglob("kustomization.yaml"))


# kubectl releases before 1.27 (Debian 12's kubernetes-client is 1.20) embed a kustomize older
# than the manifests' fields (labels, patches); Kubernetes 1.27 is the documented minimum anyway.
MIN_KUSTOMIZE_MAJOR = 5


def kubectl_for_kustomize():
    """(kubectl's path, None) when it can render the kustomizations, else (None, why not)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None, "kubectl is not installed"
    result = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True,
                            timeout=60, check=False)
    match = re.search(r"Kustomize Version: v(\d+)", result.stdout)
    if not match or int(match.group(1)) < MIN_KUSTOMIZE_MAJOR:
        return None, (f"{kubectl} embeds kustomize "
                      f"{'v' + match.group(1) if match else 'older than v4'}; the manifests "
                      f"need v{MIN_KUSTOMIZE_MAJOR} or later (kubectl 1.27+)")
    return kubectl, None


def kustomize_build(kubectl, directory):
    """`kubectl kustomize directory`'s objects; raises AssertionError with kubectl's message."""
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                            text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def base_resources():
    """The k8s objects of deploy/k8s/base/kustomization.yaml's resources, as (file, object) pairs."""
    objects = []
    for name in kustomization()["resources"]:
        for doc in load_yaml_documents(K8S_BASE_DIR / name):
            objects.append((name, doc))
    return objects


def find_object(kind, name=None):
    """The one base resource of `kind` (and `name`, when given)."""
    found = [o for _, o in base_resources()
             if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    if len(found) != 1:
        raise AssertionError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


def parse_flagfile(path=FLAGS_FILE):
    """An abseil flagfile's flags as {name: value}; comment and blank lines are skipped."""
    flags = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            match = re.fullmatch(r"--([A-Za-z0-9_]+)=(.*)", line)
            if not match:
                raise AssertionError(f"{path}: not a --flag=value line: {line!r}")
            flags[match.group(1)] = match.group(2)
    return flags


def model_specs(flags):
    """The --model flag's NAME=DIR pairs, in order (the first is the default model)."""
    return [tuple(spec.split("=", 1)) for spec in flags["model"].split(",")]


def server_default_model_specs():
    """The NAME=DIR pairs of the built server's default --model (the shipped set that
    scripts/run.sh serves), read from its --helpfull."""
    result = subprocess.run([binary("DARTSERVE_SERVER"), "--helpfull"], capture_output=True,
                            text=True, timeout=60)
    # abseil wraps the help text but never inside the default's value (it has no spaces).
    match = re.search(r"--model \(.*?\);\s+default: (\S+);", result.stdout + result.stderr,
                      re.DOTALL)
    if not match:
        raise AssertionError(f"no --model default in dartserve --helpfull:\n{result.stdout}")
    return [tuple(spec.split("=", 1)) for spec in match.group(1).split(",")]


def parse_quantity(quantity):
    """A Kubernetes resource quantity as a float in base units (cores, bytes)."""
    text = str(quantity)
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6,
                "G": 1e9, "m": 1e-3}
    for suffix, factor in suffixes.items():
        if text.endswith(suffix):
            return float(text[:-len(suffix)]) * factor
    return float(text)


def dockerfile_instructions(path):
    """A Dockerfile's instructions as (KEYWORD, arguments) pairs, continuation lines joined."""
    instructions = []
    current = ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not current and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.lstrip().startswith("#"):
                continue  # a comment inside a continued instruction
            if line.endswith("\\"):
                current += line[:-1] + " "
                continue
            current += line
            keyword, _, arguments = current.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            current = ""
    return instructions


def exec_form(arguments):
    """The argument vector of an exec-form (JSON array) or shell-form instruction argument."""
    arguments = arguments.strip()
    if arguments.startswith("["):
        return json.loads(arguments)
    return shlex.split(arguments)


def healthcheck_command(path):
    """The HEALTHCHECK's command vector (after `CMD`)."""
    for keyword, arguments in dockerfile_instructions(path):
        if keyword == "HEALTHCHECK":
            _, _, command = arguments.partition("CMD ")
            return exec_form(command)
    raise AssertionError(f"{path} has no HEALTHCHECK")


# --- PromQL ---------------------------------------------------------------------------------

# Words that may stand where a metric name can, but are not metric names.
_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan", "atan2",
}
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![A-Za-z0-9_.:$])[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL_VALUES = re.compile(r"\s*label_values\(\s*(?:(.*?)\s*,)?\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*")


def promql_metric_names(expr):
    """The metric names a PromQL expression selects.

    A lexical reading, enough for the expressions this project writes: strings, label matchers,
    range and subquery brackets and grouping clauses are removed; what remains of the
    identifiers that are not followed by "(" (functions, aggregations) and are not keywords are
    metric names. Grafana's $variables and label_values(metric, label) queries are understood.
    """
    label_values = _LABEL_VALUES.fullmatch(expr)
    if label_values:
        return promql_metric_names(label_values.group(1)) if label_values.group(1) else set()
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        token = match.group(0)
        if text[match.end():].lstrip().startswith("("):
            continue
        if token.lower() in _PROMQL_WORDS:
            continue
        names.add(token)
    return names


def rule_files():
    return sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))


def rules():
    """Every rule of deploy/prometheus/rules/*.yml as (file name, rule) pairs."""
    out = []
    for path in rule_files():
        for group in load_yaml_documents(path)[0]["groups"]:
            for rule in group["rules"]:
                out.append((path.name, rule))
    return out


def recorded_names():
    return {rule["record"] for _, rule in rules() if "record" in rule}


def dashboard():
    with open(DASHBOARD_FILE, encoding="utf-8") as f:
        return json.load(f)


def dashboard_panels():
    """Every panel of the dashboard, rows' nested panels included."""
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_expressions():
    """(where, PromQL) for every panel target and templating query of the dashboard."""
    out = []
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            out.append((f"panel '{panel['title']}' target {target['refId']}", target["expr"]))
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            out.append((f"variable '{variable['name']}'", query))
    return out


def adapter_rules():
    config = load_yaml_documents(ADAPTER_CONFIG_FILE)[0]
    return yaml.safe_load(config["data"]["config.yaml"])["rules"]


def referenced_metric_names():
    """{metric name: [where it is used]} over the rules, alerts, adapter rules and dashboard."""
    uses = {}

    def add(where, expr):
        for name in promql_metric_names(expr):
            uses.setdefault(name, []).append(where)

    for file_name, rule in rules():
        add(f"{file_name}: {rule.get('record') or rule.get('alert')}", rule["expr"])
    for rule in adapter_rules():
        add(f"adapter rule {rule['name']['as']}: seriesQuery", rule["seriesQuery"])
        # <<.Series>> is the seriesQuery's metric; the other placeholders are label matchers
        # and grouping, which name no metric.
        query = rule["metricsQuery"].replace("<<.LabelMatchers>>", "")
        query = query.replace("<<.GroupBy>>", "pod")
        for series in promql_metric_names(rule["seriesQuery"]):
            add(f"adapter rule {rule['name']['as']}: metricsQuery",
                query.replace("<<.Series>>", series))
    for where, expr in dashboard_expressions():
        add(f"dashboard {where}", expr)
    return uses


def exposition_names(exposition):
    """Every metric family and sample name in a Prometheus text exposition."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0))
    return names


# --- A server child process ------------------------------------------------------------


class ServerProcess:
    """dartserve as a child process; its stdout lines arrive on a queue from a reader thread."""

    def __init__(self, args, env=None):
        env = dict(os.environ if env is None else env, OMP_NUM_THREADS="1")
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, env=env)
        self.lines = queue.Queue()
        self.output = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)  # end of output: the process exited

    def wait_for_line(self, pattern, timeout):
        """The first match of `pattern` in a line printed from now on; fails on exit or timeout."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} after {timeout} s:\n"
                                     + "".join(self.output)) from None
            if line is None:
                raise AssertionError(f"dartserve exited ({self.process.wait()}) before printing "
                                     f"{pattern!r}:\n" + "".join(self.output))
            self.output.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def wait_until_serving(self, timeout):
        """The (gRPC, metrics) ports, once the server reports SERVING (models warmed up)."""
        ports = self.wait_for_line(r"gRPC on [0-9.]+:(\d+), metrics on [0-9.]+:(\d+)", timeout)
        self.wait_for_line(r"serving \(health SERVING\)", timeout)
        return int(ports.group(1)), int(ports.group(2))

    def terminate(self, timeout):
        """SIGTERM, then the exit status (the remaining output is collected)."""
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=timeout)
        while (line := self.lines.get(timeout=timeout)) is not None:
            self.output.append(line)
        return status

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
