"""The backup manifests (k8s/base/cronjob-backup.yaml, backup-pvc.yaml, the StatefulSet's
restore init container and k8s/overlays/restore), offline: what the CronJob must guarantee,
that its command line parses with the real kvctl, and that the init container is a no-op unless
RESTORE_FROM names a file."""
import re
import os
import subprocess

import pytest

import yaml

from conftest import (HERE, K8S, KVCTL_BIN, KVSTORE_BIN, OVERLAYS, TARGETS, clean_env, find, kubectl,
                      objects)


def cronjob(target):
    return find(objects(target), "CronJob", "kvstore-backup")


def job_pod(target):
    return cronjob(target)["spec"]["jobTemplate"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("target", TARGETS)
def test_cronjob_is_daily_forbids_overlap_and_limits_retries_and_history(target):
    spec = cronjob(target)["spec"]
    minute, hour, dom, month, dow = spec["schedule"].split()
    assert minute.isdigit() and hour.isdigit() and (dom, month, dow) == ("*", "*", "*")
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert 0 < job["backoffLimit"] <= 6
    assert job_pod(target)["restartPolicy"] in ("Never", "OnFailure")


@pytest.mark.parametrize("target", TARGETS)
def test_cronjob_uses_the_image_the_secret_and_the_backup_volume(target):
    objs = objects(target)
    sts = find(objs, "StatefulSet", "kvstore")
    pod = job_pod(target)
    [container] = pod["containers"]
    assert container["image"] == sts["spec"]["template"]["spec"]["containers"][0]["image"]
    env = {e["name"]: e for e in container["env"]}
    assert env["KVSTORE_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "kvstore-auth"
    assert env["BACKUP_HOST"]["value"] == "kvstore-read"
    assert find(objs, "Service", "kvstore-read")
    assert int(env["BACKUP_KEEP"]["value"]) >= 1
    claim = find(objs, "PersistentVolumeClaim", "kvstore-backup")
    [volume] = pod["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert container["volumeMounts"] == [{"name": volume["name"], "mountPath": "/backup"}]
    assert pod["enableServiceLinks"] is False
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    # The NetworkPolicy admits the job's pods to 5555.
    policy = find(objs, "NetworkPolicy", "kvstore")
    labels = cronjob(target)["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    sources = [s.get("podSelector", {}).get("matchLabels") for rule in policy["spec"]["ingress"]
               if {"port": 5555, "protocol": "TCP"} in rule["ports"] for s in rule["from"]]
    assert labels in sources
    # ...and is not an endpoint of the Services.
    for service in (o for o in objs if o["kind"] == "Service"):
        selector = service["spec"]["selector"]
        assert not all(labels.get(k) == v for k, v in selector.items()), service["metadata"]


def test_cronjob_command_parses_with_the_real_kvctl(tmp_path):
    """Kubernetes expands $(VAR) from the container's env; then kvctl must accept the line.
    Against a closed port it gets as far as connecting: exit 3, not 2 (usage)."""
    [container] = job_pod("base")["containers"]
    env = {e["name"]: e.get("value", "") for e in container["env"]}
    args = []
    for arg in container["command"][1:]:
        for name, value in env.items():
            arg = arg.replace(f"$({name})", value)
        args.append(arg.replace("/backup", str(tmp_path)))
    args = [a.replace("--host=kvstore-read", "--host=127.0.0.1").replace("--port=5555", "--port=1")
            for a in args]
    result = subprocess.run([KVCTL_BIN, *args], capture_output=True, text=True, timeout=30,
                            env=clean_env({}))
    assert result.returncode == 3, result.stderr


@pytest.mark.parametrize("target", TARGETS)
def test_restore_init_container_is_a_no_op_by_default(target, tmp_path):
    init = {c["name"]: c for c in find(objects(target), "StatefulSet", "kvstore")["spec"]
            ["template"]["spec"]["initContainers"]}
    restore = init["restore"]
    assert restore["command"][:3] == ["kvstore", "restore", "--if-empty"]
    env = {e["name"]: e.get("value") for e in restore["env"]}
    assert env["RESTORE_FROM"] == ""
    assert {"name": "data", "mountPath": "/data"} in restore["volumeMounts"]
    data = find(objects(target), "ConfigMap", "kvstore-config")["data"]
    result = subprocess.run(
        [KVSTORE_BIN, *restore["command"][1:], "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=20,
        env=clean_env({**data, "POD_NAME": "kvstore-0", "RESTORE_FROM": ""}))
    assert result.returncode == 0, result.stderr
    assert "nothing to restore" in result.stdout
    assert not (tmp_path / "data" / "db").exists()


def test_restore_overlay_mounts_the_backup_and_names_a_file(tmp_path):
    out = subprocess.run([kubectl(), "kustomize", str(K8S / "overlays" / "restore")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    objs = [d for d in yaml.safe_load_all(out.stdout) if d]
    spec = find(objs, "StatefulSet", "kvstore")["spec"]["template"]["spec"]
    restore = {c["name"]: c for c in spec["initContainers"]}["restore"]
    env = {e["name"]: e.get("value") for e in restore["env"]}
    assert env["RESTORE_FROM"].startswith("/backup/") and env["RESTORE_FROM"].endswith(".kvbackup")
    assert {"name": "backup", "mountPath": "/backup", "readOnly": True} in restore["volumeMounts"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["backup"]["persistentVolumeClaim"]["claimName"] == "kvstore-backup"
    path = tmp_path / "restore.yaml"
    path.write_text(out.stdout)
    result = subprocess.run(["node", str(HERE / "validate.mjs"), str(path)], capture_output=True,
                            text=True, timeout=120, cwd=HERE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_restore_component_adds_to_any_overlay(overlay, tmp_path):
    """docs/BACKUP.md restores a cluster with the overlay of its environment plus the restore
    component, so that the volumes (which a StatefulSet cannot resize later) are that overlay's."""
    def relative(path):  # kustomize takes no absolute paths
        return os.path.relpath(path, tmp_path)

    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {relative(K8S / 'overlays' / overlay)}\n"
        f"components:\n  - {relative(K8S / 'components' / 'restore')}\n")
    out = subprocess.run([kubectl(), "kustomize", str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    with_restore = find([d for d in yaml.safe_load_all(out.stdout) if d], "StatefulSet", "kvstore")
    plain = subprocess.run([kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
                           capture_output=True, text=True, timeout=120)
    without = find([d for d in yaml.safe_load_all(plain.stdout) if d], "StatefulSet", "kvstore")
    assert with_restore["spec"]["volumeClaimTemplates"] == without["spec"]["volumeClaimTemplates"]
    restore = {c["name"]: c for c in with_restore["spec"]["template"]["spec"]["initContainers"]}
    env = {e["name"]: e.get("value") for e in restore["restore"]["env"]}
    assert env["RESTORE_FROM"].startswith("/backup/")


def selects(selector, labels):
    """True when a label selector "k=v,k2=v2" (equality terms only) matches labels."""
    terms = [term.split("=", 1) for term in selector.split(",")]
    return all(labels.get(k) == v for k, v in terms)


@pytest.mark.parametrize("target", TARGETS)
def test_deleting_the_data_volumes_spares_the_backup_volume(target):
    """Disaster recovery (docs/BACKUP.md) deletes the old data PVCs in the namespace that also
    holds the backup PVC. Neither a selector on a data volume's label nor the doc's commands
    may select the backups (the backup PVC used to carry app=kvstore, and the doc said
    `kubectl delete pvc -l app=kvstore`)."""
    objs = objects(target)
    backup_labels = find(objs, "PersistentVolumeClaim", "kvstore-backup")["metadata"]["labels"]
    sts = find(objs, "StatefulSet", "kvstore")
    [template] = sts["spec"]["volumeClaimTemplates"]
    for key, value in template["metadata"]["labels"].items():
        assert not selects(f"{key}={value}", backup_labels), (key, value, backup_labels)
    data_claims = [f"{template['metadata']['name']}-kvstore-{i}"
                   for i in range(sts["spec"]["replicas"])]
    doc = (K8S.parent / "docs" / "BACKUP.md").read_text()
    commands = re.findall(r"kubectl delete pvc[^`\n]*", doc)
    assert commands, "docs/BACKUP.md no longer says how to delete the old data volumes"
    for command in commands:
        words = command.split()
        for i, word in enumerate(words):
            if word in ("-l", "--selector"):
                assert not selects(words[i + 1], backup_labels), command
        assert "kvstore-backup" not in words, command
    assert any(all(claim in command.split() for claim in data_claims) for command in commands), \
        (commands, data_claims)
