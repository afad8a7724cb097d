"""Shared helpers of the Kubernetes checks (tests/k8s): render the manifests with
`kubectl kustomize`, load them, and ask the real kvstore binary for its settings.

No cluster and no Docker engine are needed: everything runs offline on this machine. The
binaries come from KVSTORE_BIN / KVCTL_BIN (set by ctest) or the default build directory.
"""
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
HERE = Path(__file__).resolve().parent
KVSTORE_BIN = os.environ.get("KVSTORE_BIN", str(ROOT / "build/src/main/kvstore"))
KVCTL_BIN = os.environ.get("KVCTL_BIN", str(ROOT / "build/tools/kvctl/kvctl"))
OVERLAYS = ["dev", "staging", "production"]
# Every kustomization the repository ships: the base as `kubectl apply -k k8s/` sees it, and
# each overlay.
TARGETS = ["base"] + OVERLAYS


def target_dir(target):
    return K8S if target == "base" else K8S / "overlays" / target


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kubectl():
    """Path of kubectl, or skip (scripts/install-deps.sh installs it where it can)."""
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed (scripts/install-deps.sh installs it): the "
                    "manifests were NOT rendered nor checked")
    out = subprocess.run([path, "version", "--client"], capture_output=True, text=True).stdout
    match = re.search(r"Kustomize Version: v(\d+)", out)
    if match is None or int(match.group(1)) < 4:
        pytest.skip(f"kubectl's kustomize is too old for the overlays' syntax (need v4+): {out!r}")
    return path


_rendered = {}


def render(target):
    """The objects of one kustomization, as `kubectl kustomize` renders them (cached)."""
    if target not in _rendered:
        result = subprocess.run([kubectl(), "kustomize", str(target_dir(target))],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"kubectl kustomize {target} failed:\n{result.stderr}"
        _rendered[target] = (result.stdout, [d for d in yaml.safe_load_all(result.stdout) if d])
    return _rendered[target]


def objects(target):
    return render(target)[1]


def find(objs, kind, name=None):
    """The one object of that kind (and name)."""
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def binary_settings():
    """{env name: default} of every setting, parsed from `kvstore --help`
    ("... (env NAME, default VALUE)")."""
    out = subprocess.run([KVSTORE_BIN, "--help"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    pairs = re.findall(r"\(env ([A-Z0-9_]+), default ([^)]*)\)", out.stdout)
    assert len(pairs) > 20, f"could not parse settings from kvstore --help:\n{out.stdout}"
    return dict(pairs)


def clean_env(extra):
    """A minimal environment: no inherited kvstore settings, plus extra."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "ASAN_OPTIONS", "UBSAN_OPTIONS")
           if k in os.environ}
    env.update(extra)
    return env
