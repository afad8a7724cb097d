"""`kubectl apply -f k8s/` and `kubectl apply -k k8s/` (and -k of each overlay) run their whole
client side: every file is read, every kind mapped through API discovery, and both apply the
same objects. The API server is a local stand-in (fake_apiserver.py): no cluster is needed,
and nothing reaches one. `--validate=false` because the stand-in serves no OpenAPI document;
schemas are checked by test_manifests.py."""
import shutil
import subprocess

import pytest

from conftest import K8S, OVERLAYS, kubectl, target_dir
from fake_apiserver import FakeApiServer


@pytest.fixture
def run_kubectl(tmp_path):
    api = FakeApiServer()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{api.url}"}}}}]
users: [{{name: fake, user: {{token: fake}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]
current-context: fake
""")
    # HOME: kubectl caches discovery under ~/.kube; keep it away from the user's.
    env = {"KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}

    def run(*args):
        return subprocess.run([kubectl(), *args, "--dry-run=client", "--validate=false",
                               "-o", "name"], capture_output=True, text=True, env=env, timeout=120)

    yield run
    api.close()


def applied(result):
    assert result.returncode == 0, result.stderr
    return sorted(result.stdout.split())


def test_apply_f_and_apply_k_apply_the_same_objects(run_kubectl):
    by_f = applied(run_kubectl("apply", "-f", str(K8S)))
    by_k = applied(run_kubectl("apply", "-k", str(K8S)))
    assert by_f == by_k
    assert "statefulset.apps/kvstore" in by_f
    assert "service/kvstore-master" in by_f
    assert not any("secret" in name for name in by_f)  # the example is never applied
    assert len(by_f) == 13  # 11 + the backup CronJob and its PVC


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_apply_k_of_each_overlay(run_kubectl, overlay):
    assert applied(run_kubectl("apply", "-k", str(target_dir(overlay)))) == \
        applied(run_kubectl("apply", "-k", str(K8S)))


def test_a_kustomization_yaml_would_break_apply_f(run_kubectl, tmp_path):
    """Why k8s/ has `Kustomization` (no extension) and not kustomization.yaml: kubectl -f
    reads every .yaml file and cannot map kind Kustomization. This also shows the stand-in
    API server catches such a failure."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy, symlinks=False, ignore=shutil.ignore_patterns("overlays"))
    (copy / "Kustomization").rename(copy / "kustomization.yaml")
    result = run_kubectl("apply", "-f", str(copy))
    assert result.returncode != 0
    assert 'no matches for kind "Kustomization"' in result.stderr


def test_top_level_yaml_files_are_the_base_files():
    """k8s/*.yaml are symlinks to k8s/base/*.yaml (kustomize refuses overlays below their base
    directory, and -f needs the files in k8s/): every base file has its link."""
    top = sorted(p.name for p in K8S.glob("*.yaml"))
    base = sorted(p.name for p in (K8S / "base").glob("*.yaml") if p.name != "kustomization.yaml")
    assert top == base
    for name in top:
        assert (K8S / name).is_symlink() and (K8S / name).resolve() == (K8S / "base" / name)
