"""The Kubernetes manifests (k8s/ and every overlay), offline: they render with
`kubectl kustomize`, every object passes the Kubernetes schemas (validate.mjs), and the objects
agree with each other and with the real kvstore binary (ports, setting names, probe paths,
the role each pod takes)."""
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import (HERE, K8S, KVSTORE_BIN, OVERLAYS, ROOT, TARGETS, clean_env, find,
                      free_port, objects, render, binary_settings)

NAMESPACE = "kvstore"


def size_bytes(text):
    """'50Gi' (Kubernetes quantity) or '40GiB' (kvstore size) -> bytes."""
    match = re.fullmatch(r"(\d+)\s*([KMGT]i?)?B?", str(text))
    assert match, f"not a size: {text!r}"
    scale = {"": 1, "K": 1, "Ki": 1, "M": 2, "Mi": 2, "G": 3, "Gi": 3, "T": 4, "Ti": 4}
    return int(match.group(1)) * 1024 ** scale[match.group(2) or ""]


def statefulset(target):
    return find(objects(target), "StatefulSet", "kvstore")


def pod_spec(target):
    return statefulset(target)["spec"]["template"]["spec"]


def main_container(target):
    containers = pod_spec(target)["containers"]
    assert [c["name"] for c in containers] == ["kvstore"]
    return containers[0]


def configmap(target):
    return find(objects(target), "ConfigMap", "kvstore-config")["data"]


def settings_of(target):
    """The value of every setting in the pods: the binary's defaults, overridden by the
    ConfigMap."""
    values = binary_settings()
    values.update(configmap(target))
    return values


# ---- Rendering and schemas ----

@pytest.mark.parametrize("target", TARGETS)
def test_renders_and_every_object_is_namespaced_and_labelled(target):
    objs = objects(target)
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(["Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap",
                            "Service", "Service", "Service", "StatefulSet",
                            "PodDisruptionBudget", "NetworkPolicy", "PersistentVolumeClaim",
                            "CronJob"])
    for o in objs:
        if o["kind"] == "Namespace":
            assert o["metadata"]["name"] == NAMESPACE
        else:
            assert o["metadata"].get("namespace") == NAMESPACE, o["metadata"]["name"]
        # The backup volume is the one exception: see test_backup_manifests.py.
        expected = "kvstore-backup" if o["metadata"]["name"] == "kvstore-backup" and \
            o["kind"] == "PersistentVolumeClaim" else "kvstore"
        assert o["metadata"]["labels"]["app"] == expected, o["metadata"]["name"]


@pytest.mark.parametrize("target", TARGETS)
def test_every_object_passes_the_kubernetes_schemas(target, tmp_path):
    text = render(target)[0]
    path = tmp_path / f"{target}.yaml"
    path.write_text(text)
    result = subprocess.run(["node", str(HERE / "validate.mjs"), str(path)], capture_output=True,
                            text=True, timeout=120, cwd=HERE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("\nvalid ") + result.stdout.startswith("valid ") == len(objects(target))


def test_the_validator_rejects_a_type_error_and_an_unknown_field(tmp_path):
    """The control for the test above: the same StatefulSet with a string port and a
    misspelt field must fail."""
    sts = statefulset("base")
    bad = yaml.safe_load(yaml.safe_dump(sts))
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "5555"
    bad["spec"]["template"]["spec"]["securityContext"]["fsGroupp"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = subprocess.run(["node", str(HERE / "validate.mjs"), str(path)], capture_output=True,
                            text=True, timeout=120, cwd=HERE)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "containerPort must be integer" in result.stdout
    assert "/spec/template/spec/securityContext/fsGroupp is not a field" in result.stdout


def test_the_secret_example_is_a_valid_secret_that_the_statefulset_reads(tmp_path):
    text = (K8S / "secret.example.yaml").read_text()
    # Commented out on purpose, so that `kubectl apply -f k8s/` never applies a known password.
    assert all(line.startswith("#") or not line.strip() for line in text.splitlines())
    body = "\n".join(line[2:] for line in text.splitlines()
                     if line.startswith("# ") and re.match(r"# ( *[a-zA-Z_]+:|apiVersion)", line))
    secret = yaml.safe_load(body[body.index("apiVersion"):])
    assert secret["kind"] == "Secret"
    path = tmp_path / "secret.yaml"
    path.write_text(yaml.safe_dump(secret))
    result = subprocess.run(["node", str(HERE / "validate.mjs"), str(path)], capture_output=True,
                            text=True, timeout=120, cwd=HERE)
    assert result.returncode == 0, result.stdout
    env = {e["name"]: e for e in main_container("base")["env"]}
    ref = env["KVSTORE_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in secret["stringData"]
    assert secret["metadata"]["namespace"] == NAMESPACE
    # The env name is the one the binary reads the password from.
    assert "KVSTORE_PASSWORD" in binary_settings()


# ---- Services, labels, ports ----

@pytest.mark.parametrize("target", TARGETS)
def test_services_select_the_pods_and_the_master_by_its_role_label(target):
    objs = objects(target)
    sts = statefulset(target)
    template_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= template_labels.items()

    headless = find(objs, "Service", "kvstore-headless")
    assert sts["spec"]["serviceName"] == "kvstore-headless"
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["spec"]["selector"] == {"app": "kvstore"}

    # The master Service selects the label the server sets on its own pod (role=master, see
    # test_role_label.py) on top of the pod template's app label.
    master = find(objs, "Service", "kvstore-master")
    assert master["spec"]["selector"] == {"app": "kvstore", "role": "master"}
    assert "role" not in template_labels  # set by the pod itself, never by the template

    read = find(objs, "Service", "kvstore-read")
    assert read["spec"]["selector"] == {"app": "kvstore"}
    assert read["spec"].get("publishNotReadyAddresses") is not True


@pytest.mark.parametrize("target", TARGETS)
def test_ports_are_the_binarys_defaults_and_every_service_port_resolves(target):
    defaults = binary_settings()
    assert defaults["PORT"] == "5555" and defaults["ADMIN_PORT"] == "8080"
    assert "PORT" not in configmap(target) and "ADMIN_PORT" not in configmap(target)
    ports = {p["name"]: p["containerPort"] for p in main_container(target)["ports"]}
    assert ports == {"resp": int(defaults["PORT"]), "admin": int(defaults["ADMIN_PORT"])}
    for service in [o for o in objects(target) if o["kind"] == "Service"]:
        for port in service["spec"]["ports"]:
            target_port = port["targetPort"]
            assert target_port in ports, f"{service['metadata']['name']}: {target_port}"
            assert port["port"] == ports[target_port]
    assert [p["port"] for p in find(objects(target), "Service", "kvstore-master")["spec"]["ports"]] == [5555]


@pytest.mark.parametrize("target", TARGETS)
def test_network_policy_opens_exactly_the_container_ports(target):
    policy = find(objects(target), "NetworkPolicy", "kvstore")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app": "kvstore"}}
    rules = {r["ports"][0]["port"]: r["from"] for r in policy["spec"]["ingress"]}
    assert sorted(rules) == [5555, 8080]
    assert {"podSelector": {"matchLabels": {"app": "kvstore"}}} in rules[5555]  # replication
    assert {"namespaceSelector": {"matchLabels": {"kvstore-client": "true"}}} in rules[5555]
    assert rules[8080] == [{"namespaceSelector": {"matchLabels": {"kvstore-monitoring": "true"}}}]


# ---- Settings: ConfigMap, env, mounts ----

@pytest.mark.parametrize("target", TARGETS)
def test_configmap_keys_are_settings_the_binary_reads(target):
    data = configmap(target)
    known = binary_settings()
    unknown = sorted(set(data) - set(known))
    assert not unknown, f"ConfigMap keys that are no setting's env name: {unknown}"
    # The keys the operator documentation names.
    assert data["MASTER_ORDINAL"] == "0"
    assert data["REPLICATION_ENABLED"] == "true"
    assert data["REPLICATION_MODE"] in ("async", "sync")
    assert all(isinstance(v, str) for v in data.values())


@pytest.mark.parametrize("target", TARGETS)
def test_pods_read_the_configmap_as_env_and_as_a_directory_at_the_config_dir(target):
    spec = pod_spec(target)
    defaults = binary_settings()
    container = main_container(target)
    for c in spec["initContainers"] + spec["containers"]:
        assert c["envFrom"] == [{"configMapRef": {"name": "kvstore-config"}}], c["name"]
        env = {e["name"]: e for e in c["env"]}
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    # A directory mount (not subPath): Kubernetes updates it in place when the ConfigMap changes.
    assert mounts["config"]["mountPath"] == defaults["CONFIG_DIR"] == "/etc/kvstore"
    assert "subPath" not in mounts["config"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "kvstore-config"
    assert mounts["data"]["mountPath"] == defaults["DATA_DIR"] == "/data"
    claims = statefulset(target)["spec"]["volumeClaimTemplates"]
    assert [c["metadata"]["name"] for c in claims] == ["data"]
    assert spec["enableServiceLinks"] is False


@pytest.mark.parametrize("target", TARGETS)
def test_the_database_fits_the_volume(target):
    """The LMDB map, the log at its largest, three log segments (current, next, one being
    trimmed) and one snapshot file as large as the data (a backup's or a full resync's, written
    under the data directory) must fit the volume, or the disk fills before the map does. The log
    keeps up to REPL_BACKLOG_MAX_BYTES for a lagging replica or a full resync in progress, which
    is when the snapshot file exists too."""
    values = settings_of(target)
    volume = size_bytes(statefulset(target)["spec"]["volumeClaimTemplates"][0]["spec"]
                        ["resources"]["requests"]["storage"])
    log = max(size_bytes(values["REPL_BACKLOG_BYTES"]), size_bytes(values["REPL_BACKLOG_MAX_BYTES"]))
    need = 2 * size_bytes(values["MAX_MAP_BYTES"]) + log + 3 * size_bytes(values["LOG_SEGMENT_BYTES"])
    assert need <= volume, f"{need} bytes of database and log > {volume} bytes of volume"


@pytest.mark.parametrize("target", TARGETS)
def test_the_backups_fit_the_backup_volume(target):
    """BACKUP_KEEP + 1 backups (retention deletes the oldest only once the new one is written),
    each up to the size of the map, must fit the backup volume, or backups start failing as the
    data grows."""
    objs = objects(target)
    claim = find(objs, "PersistentVolumeClaim", "kvstore-backup")
    volume = size_bytes(claim["spec"]["resources"]["requests"]["storage"])
    job = find(objs, "CronJob", "kvstore-backup")["spec"]["jobTemplate"]["spec"]["template"]
    env = {e["name"]: e.get("value") for e in job["spec"]["containers"][0].get("env", [])}
    need = (int(env["BACKUP_KEEP"]) + 1) * size_bytes(settings_of(target)["MAX_MAP_BYTES"])
    assert need <= volume, f"{need} bytes of backups > {volume} bytes of backup volume"


# ---- The binary against the manifests ----

@pytest.mark.parametrize("target", TARGETS)
def test_init_container_runs_kvstore_role_and_it_accepts_the_configmap(target):
    init = pod_spec(target)["initContainers"]
    assert [c["name"] for c in init] == ["role"]
    assert init[0]["command"] == ["kvstore", "role"]
    assert init[0]["image"] == main_container(target)["image"]
    data = configmap(target)
    replicas = statefulset(target)["spec"]["replicas"]
    master = int(data["MASTER_ORDINAL"])
    for ordinal in range(replicas):
        env = clean_env({**data, "POD_NAME": f"kvstore-{ordinal}"})
        result = subprocess.run([KVSTORE_BIN] + init[0]["command"][1:], capture_output=True,
                                text=True, env=env, timeout=20)
        assert result.returncode == 0, result.stderr
        if ordinal == master:
            assert "role: master\n" in result.stdout
        else:
            assert "role: replica\n" in result.stdout
            assert f"master: kvstore-{master}.kvstore-headless:5555\n" in result.stdout


def test_init_container_fails_on_a_bad_configmap_value():
    """What the init container is for: a bad value stops the pod with a message in
    `kubectl logs -c role`, and exit code 2."""
    env = clean_env({**configmap("base"), "POD_NAME": "kvstore-0", "REPLICATION_MODE": "fast"})
    result = subprocess.run([KVSTORE_BIN, "role"], capture_output=True, text=True, env=env,
                            timeout=20)
    assert result.returncode == 2
    assert 'invalid replication_mode "fast" (from env REPLICATION_MODE)' in result.stderr


def test_probe_paths_answer_on_the_admin_port(tmp_path):
    container = main_container("base")
    probes = {kind: container[kind]["httpGet"]
              for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {p["port"] for p in probes.values()} == {"admin"}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    port, admin_port = free_port(), free_port()
    env = clean_env({**configmap("base"), "POD_NAME": "kvstore-0"})
    log = open(tmp_path / "kvstore.log", "wb")
    proc = subprocess.Popen([KVSTORE_BIN, "--bind", "127.0.0.1", "--port", str(port),
                             "--admin-port", str(admin_port), "--data-dir", str(tmp_path / "data"),
                             "--max-map-bytes", "64MiB"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        answers = {}
        deadline = time.time() + 20
        for kind, probe in probes.items():
            while True:
                try:
                    with urllib.request.urlopen(
                            f"http://127.0.0.1:{admin_port}{probe['path']}", timeout=2) as r:
                        answers[kind] = (r.status, r.read().decode())
                    break
                except (urllib.error.URLError, ConnectionError):
                    assert proc.poll() is None, (tmp_path / "kvstore.log").read_text()
                    assert time.time() < deadline, "admin port never answered"
                    time.sleep(0.05)
        assert answers["livenessProbe"] == (200, "ok\n")
        assert answers["startupProbe"][0] == 200
        assert answers["readinessProbe"] == (200, "ok: master\n")
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=2) as r:
            assert "kvstore_up 1\n" in r.read().decode()
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0
        log.close()
        text = (tmp_path / "kvstore.log").read_text(errors="replace")
        assert "Sanitizer" not in text and "runtime error:" not in text, text


# ---- Security, lifecycle, scheduling ----

@pytest.mark.parametrize("target", TARGETS)
def test_pods_run_unprivileged_with_a_read_only_root(target):
    spec = pod_spec(target)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER 65532:65532" in dockerfile
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 65532
    assert pod["fsGroup"] == 65532
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in spec["initContainers"] + spec["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert "memory" in c["resources"]["limits"], c["name"]
        assert "cpu" in c["resources"]["requests"], c["name"]


@pytest.mark.parametrize("target", TARGETS)
def test_rbac_lets_the_pods_get_and_patch_pods_and_nothing_else(target):
    objs = objects(target)
    assert pod_spec(target)["serviceAccountName"] == find(objs, "ServiceAccount")["metadata"]["name"]
    role = find(objs, "Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}]
    binding = find(objs, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kvstore",
                                    "namespace": NAMESPACE}]


@pytest.mark.parametrize("target", TARGETS)
def test_grace_period_covers_the_shutdown_and_pods_start_in_parallel(target):
    values = settings_of(target)
    sts = statefulset(target)
    # Parallel: with OrderedReady a replica waits for a master that would start after it.
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    wait_ms = int(values["SHUTDOWN_TIMEOUT_MS"]) + int(values["SHUTDOWN_REPLICA_WAIT_MS"])
    grace_ms = pod_spec(target)["terminationGracePeriodSeconds"] * 1000
    assert grace_ms >= wait_ms + 5000, f"grace {grace_ms} ms < shutdown {wait_ms} ms + 5 s"
    startup = main_container(target)["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1800  # long recoveries


@pytest.mark.parametrize("target", TARGETS)
def test_disruption_budget_allows_a_drain(target):
    pdb = find(objects(target), "PodDisruptionBudget", "kvstore")
    replicas = statefulset(target)["spec"]["replicas"]
    assert pdb["spec"]["selector"] == {"matchLabels": {"app": "kvstore"}}
    assert pdb["spec"]["minAvailable"] < replicas or pdb["spec"]["minAvailable"] == 0
    if replicas == 3:
        assert pdb["spec"]["minAvailable"] == 2


def test_overlays_differ_from_the_base_as_documented():
    def volume(target):
        return size_bytes(statefulset(target)["spec"]["volumeClaimTemplates"][0]["spec"]
                          ["resources"]["requests"]["storage"])

    def anti_affinity(target):
        return pod_spec(target)["affinity"]["podAntiAffinity"]

    def master_type(target):
        return find(objects(target), "Service", "kvstore-master")["spec"]["type"]

    assert statefulset("base")["spec"]["replicas"] == 3
    assert "preferredDuringSchedulingIgnoredDuringExecution" in anti_affinity("base")
    assert master_type("base") == "ClusterIP"  # not exposed unless an overlay says so

    assert statefulset("dev")["spec"]["replicas"] == 1
    assert master_type("dev") == "ClusterIP"
    assert size_bytes(main_container("dev")["resources"]["limits"]["memory"]) < \
        size_bytes(main_container("base")["resources"]["limits"]["memory"])

    assert statefulset("staging")["spec"]["replicas"] == 3
    assert volume("dev") < volume("staging") < volume("production")

    assert statefulset("production")["spec"]["replicas"] == 3
    assert configmap("production")["REPLICATION_MODE"] == "sync"
    assert list(anti_affinity("production")) == ["requiredDuringSchedulingIgnoredDuringExecution"]

    def password_optional(target):
        env = {e["name"]: e for e in main_container(target)["env"]}
        return env["KVSTORE_PASSWORD"]["valueFrom"]["secretKeyRef"]["optional"]

    assert password_optional("base") is True
    assert password_optional("production") is False  # no Secret, no pods
    assert anti_affinity("production")["requiredDuringSchedulingIgnoredDuringExecution"][0][
        "topologyKey"] == "kubernetes.io/hostname"
    assert volume("production") > volume("base")
