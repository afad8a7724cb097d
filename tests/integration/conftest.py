"""Shared fixtures for the integration suite: start the real kvstore binary on a free loopback
port with its own data directory, and drive it with redis-cli, redis-py and kvctl.

Binaries come from KVSTORE_BIN / KVCTL_BIN (set by ctest) or the default build directory.
"""
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
KVSTORE_BIN = os.environ.get("KVSTORE_BIN", str(ROOT / "build/src/main/kvstore"))
KVCTL_BIN = os.environ.get("KVCTL_BIN", str(ROOT / "build/tools/kvctl/kvctl"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra=None):
    """The environment a server starts with: no inherited kvstore settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("POD_NAME", "MASTER_ORDINAL", "KVSTORE_PASSWORD", "DATA_DIR", "PORT")}
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.update(extra or {})
    return env


class KvServer:
    """One kvstore process. start() waits until it answers PING; stop() sends SIGTERM."""

    def __init__(self, data_dir, port=None, args=None, env=None):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.args = list(args or [])
        self.env = env or {}
        self.proc = None
        self.log_path = self.data_dir.parent / f"kvstore-{self.port}.log"

    def command(self):
        return [KVSTORE_BIN, "--bind", "127.0.0.1", "--port", str(self.port),
                "--data-dir", str(self.data_dir), "--admin-port", "0", *self.args]

    def start(self, timeout=20.0):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT,
                                     env=clean_env(self.env))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kvstore exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"kvstore did not start within {timeout}s:\n{self.logs()}")

    def logs(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.log.close()

    def stop(self, timeout=20.0):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        if self.proc:
            self.log.close()
        return self.proc.returncode if self.proc else None

    def client(self, **kwargs):
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30, **kwargs)

    def cli(self, *args, input=None, check=True):
        """Runs redis-cli against this server; returns stdout as text."""
        result = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
                                input=input, capture_output=True, timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(f"redis-cli {args} failed: {result.stderr!r}")
        return result.stdout.decode(errors="replace")

    def kvctl(self, *args, input=None, env=None):
        """Runs kvctl against this server; returns the CompletedProcess."""
        return subprocess.run([KVCTL_BIN, "--port", str(self.port), *args], input=input,
                              capture_output=True, timeout=60, env=clean_env(env))


@pytest.fixture
def make_server(tmp_path):
    """Factory: make_server(args=[...], env={...}) -> started KvServer, stopped at teardown."""
    servers = []

    def make(args=None, env=None, data_dir=None, port=None, start=True):
        index = len(servers)
        server = KvServer(data_dir or tmp_path / f"data{index}", port=port, args=args, env=env)
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        if server.proc and server.proc.poll() is None:
            code = server.stop()
            assert code == 0, f"kvstore exited {code} on SIGTERM:\n{server.logs()}"


@pytest.fixture
def server(make_server):
    return make_server()


def run_kvstore(args, env=None, timeout=20):
    """Runs the kvstore binary to completion (for settings checks and `kvstore role`)."""
    return subprocess.run([KVSTORE_BIN, *args], capture_output=True, timeout=timeout,
                          env=clean_env(env))
