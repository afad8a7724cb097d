"""Shared fixtures for the integration suite: start the real kvstore binary on a free loopback
port with its own data directory, and drive it with redis-cli, redis-py and kvctl.

Binaries come from KVSTORE_BIN / KVCTL_BIN (set by ctest) or the default build directory.
"""
import contextlib
import hashlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ports import free_port  # noqa: E402  (tests/ports.py, shared with tests/monitoring)

ROOT = Path(__file__).resolve().parents[2]
KVSTORE_BIN = os.environ.get("KVSTORE_BIN", str(ROOT / "build/src/main/kvstore"))
KVCTL_BIN = os.environ.get("KVCTL_BIN", str(ROOT / "build/tools/kvctl/kvctl"))


def owns_listener(pid, port):
    """True when process pid holds the socket listening on TCP port (Linux /proc)."""
    inodes = set()
    # The process's own view: a server started in a network namespace listens in that one's table.
    for table in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            continue
    return False


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
        self.bind = "127.0.0.1"  # the address the server listens on
        self.host = "127.0.0.1"  # the address clients reach it at

    def command(self):
        return [KVSTORE_BIN, "--bind", self.bind, "--port", str(self.port),
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
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    # The answer must come from this process, not one that took the port.
                    if s.recv(64) and owns_listener(self.proc.pid, self.port):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"kvstore did not start within {timeout}s:\n{self.logs()}")

    def start_on_a_free_port(self, attempts=3):
        """start(), choosing another port if another process took the free one meanwhile
        (ctest runs two test files at once)."""
        for attempt in range(attempts):
            try:
                return self.start()
            except RuntimeError:
                if attempt + 1 == attempts or "cannot listen" not in self.logs():
                    raise
                self.log.close()
                self.port = free_port()
                self.log_path = self.data_dir.parent / f"kvstore-{self.port}.log"

    def logs(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def sanitizer_reports(self):
        """Lines where ASan/UBSan/LSan reported a problem (sanitizer builds; empty otherwise)."""
        return [line for line in self.logs().splitlines()
                if "runtime error:" in line or "Sanitizer" in line]

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
        return redis.Redis(host=self.host, port=self.port, socket_timeout=30, **kwargs)

    def cli(self, *args, input=None, check=True):
        """Runs redis-cli against this server; returns stdout as text."""
        result = subprocess.run(["redis-cli", "-h", self.host, "-p", str(self.port), *args],
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
        if not start:
            return server
        return server.start() if port else server.start_on_a_free_port()

    yield make
    for server in servers:
        if server.proc and server.proc.poll() is None:
            code = server.stop()
            assert code == 0, f"kvstore exited {code} on SIGTERM:\n{server.logs()}"
    for server in servers:
        assert not server.sanitizer_reports(), "\n".join(server.sanitizer_reports())


@pytest.fixture
def server(make_server):
    return make_server()


@contextlib.contextmanager
def mounted_tmpfs(mount_point, size):
    """A small filesystem at mount_point (created here), to run out of; root only: the test is
    skipped where it cannot be mounted."""
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                             str(mount_point)], capture_output=True, timeout=30)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode(errors='replace').strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)


def run_kvstore(args, env=None, timeout=20):
    """Runs the kvstore binary to completion (for settings checks and `kvstore role`)."""
    return subprocess.run([KVSTORE_BIN, *args], capture_output=True, timeout=timeout,
                          env=clean_env(env))


@pytest.fixture(scope="module")
def module_server(tmp_path_factory):
    """One server shared by the tests of a module (start-up once); stopped with SIGTERM at the end."""
    server = KvServer(tmp_path_factory.mktemp("module") / "data")
    server.start_on_a_free_port()
    yield server
    code = server.stop()
    assert code == 0, f"kvstore exited {code} on SIGTERM:\n{server.logs()}"
    assert not server.sanitizer_reports(), "\n".join(server.sanitizer_reports())


# ---- Raw RESP, for exact error texts and protocol abuse ----

class RespError(Exception):
    """An error reply; str() is the full text after '-', e.g. "ERR syntax error"."""

    def __eq__(self, other):
        return isinstance(other, RespError) and str(self) == str(other)

    def __hash__(self):
        return hash(str(self))


def encode_command(*args):
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, int):
            arg = str(arg)
        if isinstance(arg, str):
            arg = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class RespConn:
    """A minimal blocking RESP2 client that returns error replies as RespError values instead of
    raising, and leaves their text untouched (redis-py strips the "ERR " prefix)."""

    def __init__(self, port, timeout=10.0, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def call(self, *args):
        self.sock.sendall(encode_command(*args))
        return self.read_reply()

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read_reply() for _ in range(n)]
        raise AssertionError(f"malformed reply line {line!r}")


@pytest.fixture
def r(module_server):
    """A redis-py client on the module's server, whose key space starts empty."""
    client = module_server.client()
    client.flushall()
    yield client
    client.close()


def read_until_closed(sock, timeout=5.0, limit=1 << 24):
    """Reads until the peer closes the connection or timeout passes.
    Returns (data, closed): closed is True when recv returned b"" or the peer reset."""
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, False
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            return data, False
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def keyspace_digest(client):
    """sha256 over every key and value, sorted: two equal digests mean equal key spaces."""
    keys = sorted(client.keys("*"))
    digest = hashlib.sha256()
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        for key, value in zip(chunk, client.mget(chunk)):
            shown = b"<missing>" if value is None else b"%d:%s" % (len(value), value)
            digest.update(b"%d:%s=%s;" % (len(key), key, shown))
    return f"{len(keys)} keys, sha256 {digest.hexdigest()}"


# ---- Replicated clusters (tests/integration/cluster.py) ----

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test item, so fixtures can tell that the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


@pytest.fixture
def make_cluster(tmp_path, request):
    """Factory: make_cluster(size=3, extra_args=[...], env={...}) -> cluster.Cluster (not started).
    At teardown every pod still running is killed; when the test failed, each pod's replication
    state and log tail are printed."""
    from cluster import Cluster

    clusters = []

    def make(**kwargs):
        cluster = Cluster(tmp_path / f"cluster{len(clusters)}", **kwargs)
        clusters.append(cluster)
        return cluster

    yield make
    report = getattr(request.node, "rep_call", None)
    for cluster in clusters:
        if report is not None and report.failed:
            print(cluster.describe())
        cluster.close()
    for cluster in clusters:
        assert not cluster.sanitizer_reports(), "\n".join(cluster.sanitizer_reports())
