"""The backup manifests (k8s/base/cronjob-backup.yaml, backup-pvc.yaml, the restore component
k8s/components/restore and k8s/overlays/restore), offline: what the CronJob must guarantee, that
its command line parses with the real kvctl, and that the restore Job's command restores a real
backup into an empty server and never into one that holds keys."""
import re
import os
import subprocess
import time

import pytest

import yaml

from conftest import (HERE, K8S, KVCTL_BIN, KVSTORE_BIN, OVERLAYS, TARGETS, clean_env, find,
                      free_port, kubectl, objects)


def cronjob(target):
    return find(objects(target), "CronJob", "kvstore-backup")


def job_pod(target):
    return cronjob(target)["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def assert_admitted_not_served(objs, labels):
    """The NetworkPolicy admits pods with these labels (a Job's) to 5555, and no Service selects
    them (they are clients, not endpoints)."""
    policy = find(objs, "NetworkPolicy", "kvstore")
    sources = [s.get("podSelector", {}).get("matchLabels") for rule in policy["spec"]["ingress"]
               if {"port": 5555, "protocol": "TCP"} in rule["ports"] for s in rule["from"]]
    assert labels in sources
    for service in (o for o in objs if o["kind"] == "Service"):
        selector = service["spec"]["selector"]
        assert not all(labels.get(k) == v for k, v in selector.items()), service["metadata"]


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
    assert_admitted_not_served(
        objs, cronjob(target)["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"])


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
def test_the_pods_never_mount_the_backup_volume(target):
    """The backup volume is ReadWriteOnce: referenced by the pod template, it would pin all
    three pods to one node, which the production overlay's required anti-affinity forbids, so
    two pods (maybe the master) would never start. Only Jobs mount it."""
    spec = find(objects(target), "StatefulSet", "kvstore")["spec"]["template"]["spec"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", [])
              if "persistentVolumeClaim" in v]
    assert "kvstore-backup" not in claims


def restore_objects(overlay, workdir):
    """The objects of an overlay with the restore component added, as docs/BACKUP.md says."""
    def relative(path):  # kustomize takes no absolute paths
        return os.path.relpath(path, workdir)

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {relative(K8S / 'overlays' / overlay)}\n"
        f"components:\n  - {relative(K8S / 'components' / 'restore')}\n")
    out = subprocess.run([kubectl(), "kustomize", str(workdir)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout, [d for d in yaml.safe_load_all(out.stdout) if d]


def restore_container(objs):
    job = find(objs, "Job", "kvstore-restore")
    [container] = job["spec"]["template"]["spec"]["containers"]
    return job, container


@pytest.mark.parametrize("overlay", OVERLAYS + ["restore"])
def test_the_restore_component_adds_only_a_job_that_restores_into_the_master(overlay, tmp_path):
    """docs/BACKUP.md restores a cluster with the overlay of its environment plus the restore
    component, so that the volumes (which a StatefulSet cannot resize later) are that overlay's.
    The component adds one Job and changes nothing else."""
    if overlay == "restore":  # the base with the component
        out = subprocess.run([kubectl(), "kustomize", str(K8S / "overlays" / "restore")],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        text, objs = out.stdout, [d for d in yaml.safe_load_all(out.stdout) if d]
        plain = objects("base")
    else:
        text, objs = restore_objects(overlay, tmp_path / "kustomization")
        plain = objects(overlay)
    assert [o for o in objs if o["kind"] != "Job"] == plain
    job, container = restore_container(objs)
    pod = job["spec"]["template"]["spec"]
    sts = find(objs, "StatefulSet", "kvstore")
    assert job["metadata"]["namespace"] == sts["metadata"]["namespace"]
    assert container["image"] == sts["spec"]["template"]["spec"]["containers"][0]["image"]
    assert "--host=kvstore-master" in container["command"]
    assert find(objs, "Service", "kvstore-master")
    env = {e["name"]: e for e in container["env"]}
    assert env["RESTORE_FROM"]["value"].startswith("/backup/")
    assert env["RESTORE_FROM"]["value"].endswith(".kvbackup")
    assert env["KVSTORE_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "kvstore-auth"
    assert container["volumeMounts"] == [{"name": "backup", "mountPath": "/backup",
                                          "readOnly": True}]
    [volume] = pod["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == "kvstore-backup"
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] >= 5
    assert_admitted_not_served(objs, job["spec"]["template"]["metadata"]["labels"])
    path = tmp_path / "restore.yaml"
    path.write_text(text)
    result = subprocess.run(["node", str(HERE / "validate.mjs"), str(path)], capture_output=True,
                            text=True, timeout=120, cwd=HERE)
    assert result.returncode == 0, result.stdout + result.stderr


def start_server(data_dir):
    port = free_port()
    log = open(str(data_dir) + ".log", "wb")
    proc = subprocess.Popen([KVSTORE_BIN, "--bind", "127.0.0.1", "--port", str(port),
                             "--admin-port", "0", "--data-dir", str(data_dir),
                             "--max-map-bytes", "64MiB"],
                            stdout=log, stderr=subprocess.STDOUT, env=clean_env({}))
    deadline = time.monotonic() + 20
    while kvctl(port, "ping").returncode != 0:
        assert proc.poll() is None and time.monotonic() < deadline, \
            open(log.name, errors="replace").read()
        time.sleep(0.1)
    return proc, port


def kvctl(port, *args):
    return subprocess.run([KVCTL_BIN, "--host", "127.0.0.1", "--port", str(port), *args],
                          capture_output=True, text=True, timeout=60, env=clean_env({}))


def test_the_restore_job_command_restores_into_an_empty_master_only(tmp_path):
    """The Job's command line, run as its pod would (Kubernetes expands $(VAR) from the env),
    loads a real backup into an empty server; run again (a re-created Job) it is refused and
    changes nothing."""
    _, objs = restore_objects("production", tmp_path / "kustomization")
    _, container = restore_container(objs)
    source, port = start_server(tmp_path / "source")
    try:
        for i in range(50):
            assert kvctl(port, "put", f"key{i}", f"value{i}").returncode == 0
        (tmp_path / "backups").mkdir()
        backup = kvctl(port, "backup", "--out", str(tmp_path / "backups"))
        assert backup.returncode == 0, backup.stderr
    finally:
        source.terminate()
        assert source.wait(timeout=20) == 0
    [file] = (tmp_path / "backups").glob("*.kvbackup")
    target, port = start_server(tmp_path / "target")
    try:
        env = {e["name"]: e.get("value", "") for e in container["env"]}
        assert env["RESTORE_FROM"].startswith("/backup/")
        env["RESTORE_FROM"] = str(file)  # the volume is mounted at /backup in the Job's pod
        args = []
        for arg in container["command"][1:]:
            for name, value in env.items():
                arg = arg.replace(f"$({name})", value)
            args.append(arg.replace("--host=kvstore-master", "--host=127.0.0.1")
                        .replace("--port=5555", f"--port={port}"))
        first = subprocess.run([KVCTL_BIN, *args], capture_output=True, text=True, timeout=60,
                               env=clean_env({}))
        assert first.returncode == 0, first.stderr
        assert kvctl(port, "read", "key7").stdout == "value7"
        assert kvctl(port, "put", "later", "kept").returncode == 0
        again = subprocess.run([KVCTL_BIN, *args], capture_output=True, text=True, timeout=60,
                               env=clean_env({}))
        assert again.returncode == 1, again.stderr
        assert "force" in again.stderr.lower(), again.stderr
        assert kvctl(port, "read", "later").stdout == "kept"
    finally:
        target.terminate()
        assert target.wait(timeout=20) == 0


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
