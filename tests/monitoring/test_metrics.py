"""/metrics on a real three-pod cluster: promtool accepts the exposition, the values say what
the cluster is doing (roles, replicas, lag, commands), every metric that the alert rules and the
dashboard read exists, and the logs are JSON lines that carry pod and role."""
import json
import re
import subprocess

import yaml

from conftest import EXTERNAL_METRICS, metric_names_in, promtool, sample


def test_every_pods_exposition_passes_promtool_check_metrics(cluster):
    for pod in cluster:
        result = subprocess.run([promtool(), "check", "metrics"], input=pod.metrics(),
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{pod.name}:\n{result.stdout}{result.stderr}"
        # check metrics prints lint problems (names, units, missing HELP) and still exits 0
        # for some of them: none is allowed here.
        assert result.stdout.strip() == "" and result.stderr.strip() == "", pod.name


def test_metrics_report_roles_replicas_lag_and_commands(cluster):
    master, replica1, replica2 = (pod.metrics() for pod in cluster)
    assert sample(master, "kvstore_role", {"role": "master"}) == 1
    assert sample(master, "kvstore_role", {"role": "replica"}) == 0
    for replica in (replica1, replica2):
        assert sample(replica, "kvstore_role", {"role": "master"}) == 0
        assert sample(replica, "kvstore_role", {"role": "replica"}) == 1
        assert sample(replica, "kvstore_master_link_up") == 1
        assert sample(replica, "kvstore_replication_lag_entries") == 0
        assert sample(replica, "kvstore_epoch") == sample(master, "kvstore_epoch") >= 1
    # The master sees both replicas, by ordinal, online and caught up.
    master_seq = sample(master, "kvstore_replication_seq")
    assert master_seq >= 21  # an epoch entry and 20 writes
    for ordinal in ("1", "2"):
        labels = {"ordinal": ordinal}
        assert sample(master, "kvstore_replica_acked_seq", labels) == master_seq
        assert sample(master, "kvstore_replica_lag_entries", labels) == 0
        assert sample(master, "kvstore_replica_lag_seconds", labels) < 5
        assert sample(master, "kvstore_replica_link_state", {**labels, "state": "online"}) == 1
    # Commands, by command and result; latency by family.
    assert sample(master, "kvstore_commands_total", {"command": "set", "result": "ok"}) == 20
    assert sample(master, "kvstore_commands_total", {"command": "set", "result": "error"}) == 0
    assert sample(master, "kvstore_commands_total", {"command": "get", "result": "ok"}) == 1
    assert sample(master, "kvstore_commands_total",
                  {"command": "unknown", "result": "error"}) == 1
    assert sample(master, "kvstore_command_duration_seconds_count", {"family": "write"}) == 20
    assert sample(master, "kvstore_command_duration_seconds_bucket",
                  {"family": "write", "le": "+Inf"}) == 20
    # Durability: fsync: always syncs once per group commit; commits hold the 20 SETs and the
    # write that opened the epoch.
    assert sample(master, "kvstore_fsyncs_total") >= sample(master, "kvstore_group_commits_total")
    assert sample(master, "kvstore_fsync_duration_seconds_count") == \
        sample(master, "kvstore_fsyncs_total")
    assert sample(master, "kvstore_group_commit_writes_sum") == 21
    assert sample(master, "kvstore_committed_writes_total") == 21
    assert sample(master, "kvstore_keys") == 20
    assert sample(master, "kvstore_log_last_seq") == master_seq
    # The replicas resynced: from an empty data directory, fully or partially.
    for replica in (replica1, replica2):
        assert (sample(replica, "kvstore_replication_full_resyncs_total") +
                sample(replica, "kvstore_replication_partial_resyncs_total")) >= 1
    assert sample(master, "process_open_fds") > 3
    assert sample(master, "process_resident_memory_bytes") > 1 << 20


def all_names(cluster):
    """Every sample name the three pods expose (replica-only and master-only ones included)."""
    names = set()
    for pod in cluster:
        for line in pod.metrics().splitlines():
            if line and not line.startswith("#"):
                names.add(line.split("{")[0].split(" ")[0])
    return names


def expressions(rules_file, dashboard):
    exprs = [("rule " + r["alert"], r["expr"])
             for g in yaml.safe_load(rules_file.read_text())["groups"] for r in g["rules"]]
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs.append((f"panel {panel['title']!r}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(<series selector>, <label>): the selector names the metric.
            selector = re.fullmatch(r"label_values\((.*),\s*\w+\)", variable["query"])
            exprs.append((f"variable {variable['name']}",
                          selector.group(1) if selector else variable["query"]))
    return exprs


def test_every_metric_the_rules_and_the_dashboard_read_exists(cluster, rules_file, dashboard):
    exposed = all_names(cluster)
    exprs = expressions(rules_file, dashboard)
    referenced = set()
    missing = []
    for where, expr in exprs:
        for name in metric_names_in(expr):
            referenced.add(name)
            if name not in exposed and name not in EXTERNAL_METRICS:
                missing.append(f"{where}: {name}")
    assert not missing, "metrics that no pod exposes:\n" + "\n".join(missing)
    # The extraction itself works: it found the metrics the alerts are about.
    assert {"kvstore_role", "kvstore_replication_lag_entries", "kvstore_replica_lag_seconds",
            "kvstore_storage_used_bytes", "kvstore_commands_total",
            "kvstore_command_duration_seconds_bucket", "up",
            "kube_cronjob_status_last_successful_time"} <= referenced


def test_the_name_check_reports_a_name_that_does_not_exist():
    names = metric_names_in(
        'sum by (pod, le) (rate(kvstore_nope_total{role="a b",x=~"y"}[5m])) / on (pod) '
        "kvstore_keys > 0.85 and time() - kube_x > 26 * 3600")
    assert names == {"kvstore_nope_total", "kvstore_keys", "kube_x"}


def test_logs_are_json_lines_with_time_level_message_pod_and_role(cluster):
    for pod in cluster:
        lines = [json.loads(line) for line in pod.log_lines() if line.strip()]
        assert lines, pod.name
        for line in lines:
            assert {"time", "level", "message", "pod"} <= line.keys(), line
            assert line["pod"] == pod.name
        messages = [line["message"] for line in lines]
        # The role chosen, and once taken, every line says which.
        if pod.ordinal == 0:
            assert any(m.startswith("Starting as MASTER") for m in messages)
            assert any(m.startswith("replica attached") for m in messages)
        else:
            assert any(m.startswith("Starting as REPLICA of 127.0.0.1:") for m in messages)
            assert any("resync" in m for m in messages), messages
        assert any(line.get("role") == ("master" if pod.ordinal == 0 else "replica")
                   for line in lines)
        assert any(m == "epoch opened" for m in messages) or pod.ordinal != 0
