"""The real kvstore binary, started as kvstore-0 with the environment a pod has (the ConfigMap,
POD_NAME, KUBERNETES_SERVICE_HOST/PORT and a service account directory), labels its own pod
through a local HTTPS stand-in of the Kubernetes API; the label it sets is what the
kvstore-master Service selects. A refused PATCH is not fatal and shows in /readyz and
/metrics."""
import json
import subprocess
import time
import urllib.request

import pytest

from conftest import KVSTORE_BIN, clean_env, find, free_port, objects
from fake_apiserver import FakeApiServer


@pytest.fixture
def service_account(tmp_path):
    """A service account directory (token, namespace, ca.crt) and a certificate for 127.0.0.1
    signed by that CA (self-signed: the CA is the certificate)."""
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(tmp_path / "server.key"), "-out", str(sa / "ca.crt")],
                   check=True, capture_output=True)
    (sa / "token").write_text("pod-token\n")
    (sa / "namespace").write_text("kvstore")
    return sa


def start_pod(tmp_path, sa, api):
    """kvstore as pod kvstore-0 of the base manifests; returns (process, admin port)."""
    admin_port = free_port()
    # EMPTY_MASTER_WAIT_MS=0: the master starts alone, without waiting for replicas.
    env = clean_env({**find(objects("base"), "ConfigMap")["data"], "POD_NAME": "kvstore-0",
                     "EMPTY_MASTER_WAIT_MS": "0",
                     "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                     "KUBERNETES_SERVICE_PORT": str(api.port),
                     "KUBE_SERVICEACCOUNT_DIR": str(sa)})
    log = open(tmp_path / "kvstore.log", "wb")
    proc = subprocess.Popen([KVSTORE_BIN, "--bind", "127.0.0.1", "--port", str(free_port()),
                             "--admin-port", str(admin_port), "--data-dir", str(tmp_path / "data"),
                             "--max-map-bytes", "64MiB"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.log = log
    return proc, admin_port


def stop_pod(proc):
    proc.terminate()
    code = proc.wait(timeout=20)
    proc.log.close()
    assert code == 0
    log = open(proc.log.name, errors="replace").read()
    assert "Sanitizer" not in log and "runtime error:" not in log, log


def wait_for(condition, what, proc, tmp_path):
    deadline = time.time() + 20
    while not condition():
        assert proc.poll() is None, (tmp_path / "kvstore.log").read_text()
        assert time.time() < deadline, f"timed out waiting for {what}:\n" + \
            (tmp_path / "kvstore.log").read_text()
        time.sleep(0.05)


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.status, r.read().decode()


def test_the_master_labels_its_pod_as_the_master_service_selects(tmp_path, service_account):
    api = FakeApiServer(certfile=str(service_account / "ca.crt"),
                        keyfile=str(tmp_path / "server.key"))
    proc, _ = start_pod(tmp_path, service_account, api)
    try:
        wait_for(lambda: api.patches, "the PATCH of the pod", proc, tmp_path)
        path, headers, body = api.patches[0]
        assert path == "/api/v1/namespaces/kvstore/pods/kvstore-0"
        assert headers["Content-Type"] == "application/merge-patch+json"
        assert headers["Authorization"] == "Bearer pod-token"
        patch = json.loads(body)
        assert patch == {"metadata": {"labels": {"role": "master"}}}
        # The pod's labels after the patch: the template's plus the patched ones.
        sts = find(objects("base"), "StatefulSet")
        labels = {**sts["spec"]["template"]["metadata"]["labels"], **patch["metadata"]["labels"]}
        selector = find(objects("base"), "Service", "kvstore-master")["spec"]["selector"]
        assert selector.items() <= labels.items()
        # The server logs once it has the API's answer, a moment after the request arrived.
        wait_for(lambda: "pod label set" in (tmp_path / "kvstore.log").read_text(),
                 "the log line of the label", proc, tmp_path)
    finally:
        stop_pod(proc)
        api.close()


def test_a_refused_label_is_retried_and_reported_but_not_fatal(tmp_path, service_account):
    api = FakeApiServer(certfile=str(service_account / "ca.crt"),
                        keyfile=str(tmp_path / "server.key"), patch_status=403)
    proc, admin_port = start_pod(tmp_path, service_account, api)
    try:
        wait_for(lambda: len(api.patches) >= 2, "a retried PATCH", proc, tmp_path)
        status, body = get(admin_port, "/readyz")
        assert status == 200
        assert body.startswith("ok: master (role label not set: PATCH https://127.0.0.1:")
        assert "HTTP 403" in body
        _, metrics = get(admin_port, "/metrics")
        failures = [line for line in metrics.splitlines()
                    if line.startswith("kvstore_role_label_failures_total ")]
        assert failures and int(failures[0].split()[1]) >= 1
    finally:
        stop_pod(proc)
        api.close()
