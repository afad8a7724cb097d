#!/usr/bin/env python3
"""Writes kvstore-dashboard.json, the Grafana dashboard (roles, throughput, latency, replication,
storage). Edit this file, run it, and commit both: tests/monitoring checks that every metric the
dashboard names exists in a real /metrics exposition."""
import json
from pathlib import Path

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'namespace=~"$namespace"'
panels = []
y = 0


def P(title, kind, exprs, w=12, h=8, unit="short", desc=""):
    p = {"type": kind, "title": title, "description": desc, "datasource": DS,
         "gridPos": {"x": 0, "y": 0, "w": w, "h": h},
         "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
         "targets": [{"datasource": DS, "refId": chr(65 + i), "expr": e, "legendFormat": l}
                     for i, (e, l) in enumerate(exprs)]}
    if kind == "timeseries":
        p["options"] = {"legend": {"displayMode": "table", "placement": "bottom",
                                   "calcs": ["lastNotNull", "max"]}}
    return p


def row(title, items):
    global y
    panels.append({"type": "row", "title": title, "collapsed": False,
                   "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
    y += 1
    x = hmax = 0
    for p in items:
        if x + p["gridPos"]["w"] > 24:
            x, y, hmax = 0, y + hmax, 0
        p["gridPos"]["x"], p["gridPos"]["y"] = x, y
        x += p["gridPos"]["w"]
        hmax = max(hmax, p["gridPos"]["h"])
        panels.append(p)
    y += hmax


def q(p, metric, by):
    return (f"histogram_quantile({p}, sum by (le, {by}) "
            f"(rate({metric}_bucket{{{SEL}}}[$__rate_interval])))")


def rate(metric, by, extra=""):
    return f"sum by ({by}) (rate({metric}{{{SEL}{extra}}}[$__rate_interval]))"


row("Roles", [
    P("Role per pod", "stat", [(f'kvstore_role{{{SEL},role="master"}}', "{{pod}}")], w=8, h=5,
      desc="1: master, 0: replica. Exactly one pod should show 1."),
    P("Masters", "stat", [(f'count(kvstore_role{{{SEL},role="master"}} == 1) or vector(0)',
                           "masters")], w=4, h=5, desc="Pods that are master now: 1 is healthy."),
    P("Epoch", "stat", [(f"max(kvstore_epoch{{{SEL}}})", "epoch")], w=4, h=5,
      desc="Bumped by every master start and promotion."),
    P("Ready", "stat", [(f"kvstore_ready{{{SEL}}}", "{{pod}}")], w=8, h=5),
])
row("Throughput", [
    P("Commands per second by command", "timeseries",
      [(rate("kvstore_commands_total", "command"), "{{command}}")], unit="ops"),
    P("Errors per second by command", "timeseries",
      [(rate("kvstore_commands_total", "command", ',result="error"'), "{{command}}")], unit="ops"),
    P("Commands per second by pod", "timeseries",
      [(rate("kvstore_commands_total", "pod"), "{{pod}}")], unit="ops"),
    P("Clients", "timeseries",
      [(f"kvstore_connected_clients{{{SEL}}}", "connected {{pod}}"),
       (rate("kvstore_rejected_connections_total", "pod"), "rejected/s {{pod}}")]),
])
row("Latency", [
    P("Command latency by family", "timeseries",
      [(q(0.99, "kvstore_command_duration_seconds", "family"), "p99 {{family}}"),
       (q(0.5, "kvstore_command_duration_seconds", "family"), "p50 {{family}}")], unit="s"),
    P("Log fsync latency", "timeseries",
      [(q(0.99, "kvstore_fsync_duration_seconds", "pod"), "p99 {{pod}}"),
       (q(0.5, "kvstore_fsync_duration_seconds", "pod"), "p50 {{pod}}")], unit="s"),
    P("Group commit size (writes per commit)", "timeseries",
      [(f'{rate("kvstore_group_commit_writes_sum", "pod")} / '
        f'{rate("kvstore_group_commit_writes_count", "pod")}', "mean {{pod}}"),
       (q(0.99, "kvstore_group_commit_writes", "pod"), "p99 {{pod}}")]),
    P("fsyncs per second", "timeseries", [(rate("kvstore_fsyncs_total", "pod"), "{{pod}}")],
      unit="ops"),
])
row("Replication", [
    P("Replica lag (entries)", "timeseries",
      [(f"kvstore_replication_lag_entries{{{SEL}}}", "{{pod}}"),
       (f"kvstore_replica_lag_entries{{{SEL}}}", "master's view: {{replica}}")]),
    P("Replica lag (seconds since the last acknowledgement)", "timeseries",
      [(f"kvstore_replica_lag_seconds{{{SEL}}}", "{{replica}}")], unit="s"),
    P("Master link up", "timeseries", [(f"kvstore_master_link_up{{{SEL}}}", "{{pod}}")]),
    P("Resyncs and label failures (per hour)", "timeseries",
      [(f"increase(kvstore_replication_full_resyncs_total{{{SEL}}}[1h])", "full {{pod}}"),
       (f"increase(kvstore_replication_partial_resyncs_total{{{SEL}}}[1h])", "partial {{pod}}"),
       (f"increase(kvstore_role_label_failures_total{{{SEL}}}[1h])", "label failures {{pod}}")]),
])
row("Storage", [
    P("Storage used (of max_map_bytes)", "timeseries",
      [(f"kvstore_storage_used_bytes{{{SEL}}} / kvstore_storage_map_max_bytes{{{SEL}}}",
        "{{pod}}")], unit="percentunit"),
    P("Keys", "timeseries", [(f"kvstore_keys{{{SEL}}}", "{{pod}}")]),
    P("Database and log size", "timeseries",
      [(f"kvstore_storage_used_bytes{{{SEL}}}", "db {{pod}}"),
       (f"kvstore_log_bytes{{{SEL}}}", "log {{pod}}")], unit="bytes"),
    P("Resident memory", "timeseries", [(f"process_resident_memory_bytes{{{SEL}}}", "{{pod}}")],
      unit="bytes"),
])

dashboard = {
    "title": "kvstore", "uid": "kvstore", "tags": ["kvstore"], "timezone": "browser",
    "schemaVersion": 38, "version": 1, "refresh": "30s", "time": {"from": "now-1h", "to": "now"},
    "templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
        {"name": "namespace", "type": "query", "datasource": DS,
         "query": "label_values(kvstore_up, namespace)", "includeAll": True, "allValue": ".*",
         "refresh": 2, "label": "Namespace", "current": {"text": "All", "value": "$__all"}},
    ]},
    "panels": panels,
}
out = Path(__file__).resolve().parent / "kvstore-dashboard.json"
out.write_text(json.dumps(dashboard, indent=2) + "\n")
