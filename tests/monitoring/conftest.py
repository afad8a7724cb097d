"""Fixtures of the monitoring checks: a local three-pod kvstore cluster on loopback (as
scripts/run-local.sh starts it, with admin ports), the manifests of k8s/monitoring, and the
names of the metrics that PromQL expressions reference."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ports import free_port, free_port_base  # noqa: E402  (tests/ports.py)

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "k8s" / "monitoring"
KVSTORE_BIN = os.environ.get("KVSTORE_BIN", str(ROOT / "build/src/main/kvstore"))
# Metrics that other exporters provide: Prometheus itself, kube-state-metrics, the kubelet.
EXTERNAL_METRICS = {"up", "kube_cronjob_status_last_successful_time", "kube_cronjob_created",
                    "kubelet_volume_stats_used_bytes", "kubelet_volume_stats_capacity_bytes"}


def wait_for(what, check, timeout=30.0, interval=0.2):
    """Polls check() until it returns something truthy; fails after timeout naming `what`."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - reported below
            last = e
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def promtool():
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (scripts/install-deps.sh installs prometheus)")
    return path


class Pod:
    def __init__(self, ordinal, base, work, config_dir):
        self.ordinal = ordinal
        self.name = f"kvstore-{ordinal}"
        self.port = base + ordinal
        self.admin_port = free_port()
        self.log_path = work / f"{self.name}.log"
        env = {k: v for k, v in os.environ.items()
               if k not in ("MASTER_ORDINAL", "KVSTORE_PASSWORD", "DATA_DIR", "PORT")}
        env.update(POD_NAME=self.name, MASTER_ADDRESS=f"127.0.0.1:{base // 10}{{ordinal}}")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [KVSTORE_BIN, "--bind", "127.0.0.1", "--port", str(self.port),
             "--admin-port", str(self.admin_port), "--data-dir", str(work / self.name),
             "--config-dir", str(config_dir), "--log-format", "json"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def metrics(self):
        return http_get(f"http://127.0.0.1:{self.admin_port}/metrics")

    def log_lines(self):
        return self.log_path.read_text(errors="replace").splitlines()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def sample(exposition, name, labels=None):
    """The value of the sample `name` whose labels include `labels`, or None."""
    for line in exposition.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        have = dict(re.findall(r'([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(have.get(k) == v for k, v in (labels or {}).items()):
            return float(match.group(3))
    return None


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """kvstore-0 (master) and two replicas, attached, with some writes replicated."""
    work = tmp_path_factory.mktemp("cluster")
    config_dir = work / "config"
    config_dir.mkdir()
    (config_dir / "MASTER_ORDINAL").write_text("0")
    base = free_port_base(3)
    pods = [Pod(i, base, work, config_dir) for i in range(3)]
    try:
        def attached():
            for pod in pods:
                assert pod.proc.poll() is None, f"{pod.name} exited:\n{pod.log_path.read_text()}"
            text = pods[0].metrics()
            return sample(text, "kvstore_connected_replicas") == 2
        wait_for("both replicas to attach to kvstore-0", attached)
        with socket.create_connection(("127.0.0.1", pods[0].port), timeout=10) as s:
            s.sendall(b"".join(b"SET key%d value%d\r\n" % (i, i) for i in range(20)) +
                      b"GET key1\r\nNOSUCHCOMMAND\r\n")
            replies = b""
            while not replies.endswith(b"'NOSUCHCOMMAND', with args beginning with: \r\n"):
                chunk = s.recv(65536)
                assert chunk, f"connection closed after {replies!r}"
                replies += chunk
            assert replies.count(b"+OK") == 20 and b"$6\r\nvalue1\r\n" in replies
        wait_for("the replicas to hold the 20 keys",
                 lambda: all(sample(p.metrics(), "kvstore_keys") == 20 for p in pods))
        yield pods
    finally:
        for pod in pods:
            pod.stop()
    # Sanitizer builds: any report fails the run, whatever the tests said.
    reports = [f"{pod.name}: {line}" for pod in pods for line in pod.log_lines()
               if "runtime error:" in line or "Sanitizer" in line]
    assert not reports, "\n".join(reports)


def metric_names_in(expr):
    """The metric names a PromQL expression reads: identifiers that are not functions,
    keywords, label names (inside {} or by/on/without/ignoring lists) or durations."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)              # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)                           # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)                          # ranges
    expr = re.sub(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    keywords = {"and", "or", "unless", "bool", "offset", "by", "on", "without", "ignoring",
                "inf", "nan"}
    names = set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", expr):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in keywords:
            continue
        names.add(name)
    return names


def rendered_monitoring():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: k8s/monitoring was NOT rendered")
    out = subprocess.run([kubectl, "kustomize", str(MONITORING)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="session")
def rules_file(tmp_path_factory):
    """The PrometheusRule's spec, as the plain rule file Prometheus and promtool read."""
    rule = next(o for o in rendered_monitoring() if o["kind"] == "PrometheusRule")
    path = tmp_path_factory.mktemp("rules") / "kvstore-rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path


@pytest.fixture(scope="session")
def dashboard():
    return json.loads((MONITORING / "kvstore-dashboard.json").read_text())


HERE_RULES_TEST = Path(__file__).resolve().parent / "rules_test.yaml"
