"""A real Prometheus (Debian's prometheus package) on loopback scrapes the local three-pod
cluster every second; its HTTP API then answers for roles, replication lag and command
counters, as the dashboard and the alerts will ask them."""
import json
import shutil
import signal
import subprocess
import urllib.parse

import pytest

from conftest import free_port, http_get, wait_for


@pytest.fixture(scope="module")
def prometheus(cluster, rules_file, tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (scripts/install-deps.sh installs it)")
    work = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    targets = [{"targets": [f"127.0.0.1:{pod.admin_port}"], "labels": {"pod": pod.name}}
               for pod in cluster]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_file)],
        "scrape_configs": [{"job_name": "kvstore", "static_configs": targets}],
    }
    (work / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    log = open(work / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={work / 'prometheus.yml'}",
         f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        def up():
            assert proc.poll() is None, (work / "prometheus.log").read_text()
            return http_get(url + "/-/ready").strip() != ""
        wait_for("prometheus to be ready", up, timeout=60)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def query(url, promql):
    """The instant vector of promql as {pod: value}."""
    answer = json.loads(http_get(url + "/api/v1/query?" +
                                 urllib.parse.urlencode({"query": promql})))
    assert answer["status"] == "success", answer
    return {r["metric"].get("pod", ""): float(r["value"][1]) for r in answer["data"]["result"]}


def test_prometheus_scrapes_every_pod(prometheus):
    wait_for("all three targets up",
             lambda: query(prometheus, "up") == {f"kvstore-{i}": 1.0 for i in range(3)})


def test_prometheus_sees_one_master_and_two_replicas(prometheus):
    expected = {"kvstore-0": 1.0, "kvstore-1": 0.0, "kvstore-2": 0.0}
    wait_for("the roles", lambda: query(prometheus, 'kvstore_role{role="master"}') == expected)
    assert query(prometheus, 'count(kvstore_role{role="master"} == 1)') == {"": 1.0}


def test_prometheus_sees_replication_lag(prometheus):
    wait_for("the replicas' lag", lambda: query(
        prometheus, "kvstore_replication_lag_entries") == {"kvstore-1": 0.0, "kvstore-2": 0.0})
    lag = wait_for("the master's view of its replicas", lambda: query(
        prometheus, 'max by (ordinal) (kvstore_replica_lag_entries{pod="kvstore-0"})') or None)
    assert lag == {"": 0.0} or set(lag.values()) == {0.0}
    wait_for("both replicas in the master's view", lambda: len(json.loads(http_get(
        prometheus + "/api/v1/query?" + urllib.parse.urlencode(
            {"query": "kvstore_replica_acked_seq"})))["data"]["result"]) == 2)


def test_prometheus_counts_commands(prometheus):
    wait_for("20 SETs on the master", lambda: query(
        prometheus, 'kvstore_commands_total{command="set",result="ok"}').get("kvstore-0") == 20)
    rates = wait_for("a p99 write latency", lambda: query(
        prometheus, "histogram_quantile(0.99, sum by (le) "
                    '(kvstore_command_duration_seconds_bucket{family="write"}))'))
    assert 0 < rates[""] <= 10


def test_prometheus_loads_the_rules_and_no_alert_fires_on_a_healthy_cluster(prometheus):
    rules = wait_for("the rules loaded", lambda: json.loads(
        http_get(prometheus + "/api/v1/rules"))["data"]["groups"])
    names = {r["name"] for g in rules for r in g["rules"]}
    assert {"KvstoreNoMaster", "KvstoreReplicaLagHigh", "KvstoreMasterDown"} <= names
    # Right after the start an alert may be pending (the first scrape saw a replica before
    # the master); on a healthy cluster none stays, and none fires. kube-state-metrics is not
    # here, so the backup alert has no data and stays silent too.
    def alerts():
        return json.loads(http_get(prometheus + "/api/v1/alerts"))["data"]["alerts"]
    wait_for("every rule to have evaluated", lambda: all(
        g.get("lastEvaluation", "").startswith("20") for g in json.loads(
            http_get(prometheus + "/api/v1/rules"))["data"]["groups"]))
    wait_for("no alert pending or firing", lambda: alerts() == [] or None, timeout=30)
    assert [a for a in alerts() if a["state"] == "firing"] == []
