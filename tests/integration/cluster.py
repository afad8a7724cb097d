"""A StatefulSet look-alike on loopback for the replication tests: pods kvstore-0..N-1 with stable
names, one data directory each (their PersistentVolume, kept across restarts) and one ConfigMap
directory each holding MASTER_ORDINAL. Kubernetes mounts the same ConfigMap in every pod, and
set_master_ordinal() updates every pod's copy; a subset can be updated to play a kubelet that has
not synced the change yet (a stale ConfigMap on one node).

Pod N listens on base_port + N; MASTER_ADDRESS is "127.0.0.1:<base_port / 10>{ordinal}", so the
server's text substitution of {ordinal} names the master's port (ordinals 0..9, base ending in 0).

Every wait is bounded and fails with what was awaited, the last value seen, each pod's
replication state and the tail of each pod's log.
"""
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import redis

from conftest import KvServer, RespConn, RespError
from ports import free_port, free_port_base


def parse_info(text):
    """INFO text -> {field: value}; slaveN values become dicts (ip, port, state, offset, lag)."""
    info = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        name, value = line.split(":", 1)
        if name.startswith("slave") and name[5:].isdigit():
            info[name] = dict(part.split("=", 1) for part in value.split(","))
        else:
            info[name] = value
    return info


class Pod(KvServer):
    """kvstore-<ordinal>: a KvServer with a pod identity, its own data dir and the shared
    ConfigMap dir. Its log (stdout and stderr) is appended to across restarts."""

    def __init__(self, cluster, ordinal):
        self.cluster = cluster
        self.ordinal = ordinal
        self.name = f"kvstore-{ordinal}"
        super().__init__(cluster.root / f"pv-{self.name}", port=cluster.base_port + ordinal,
                         args=cluster.extra_args + cluster.pod_args.get(ordinal, []),
                         env=self._env())
        self.log_path = cluster.root / f"{self.name}.log"
        self.admin_port = free_port() if cluster.admin else 0
        self.config_dir = cluster.root / f"configmap-{self.name}"
        self.config_dir.mkdir(exist_ok=True)
        self.starts = 0
        self.log = None

    def _env(self):
        # A master with an empty data directory opens its epoch at once here, as a test
        # starts the master alone before its replicas; test_empty_master.py tests the wait.
        env = {"POD_NAME": self.name,
               "MASTER_ADDRESS": f"127.0.0.1:{self.cluster.base_port // 10}{{ordinal}}",
               "EMPTY_MASTER_WAIT_MS": "0"}
        env.update(self.cluster.env)
        return env

    def command(self):
        command = super().command()
        command[command.index("--admin-port") + 1] = str(self.admin_port)
        return command + ["--config-dir", str(self.config_dir), "--config-poll-ms", "100"]

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines=40):
        return "\n".join(self.logs().splitlines()[-lines:])


class Cluster:
    """Pods kvstore-0..size-1. Nothing is started by the constructor: call start_all() or
    start(n). close() (the fixture's teardown) kills every pod still running."""

    def __init__(self, root, size=3, base_port=None, master_ordinal=0, extra_args=(), env=None,
                 pod_args=None, admin=False):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.base_port = base_port if base_port is not None else free_port_base()
        assert self.base_port % 10 == 0, "the port base must end in 0 ({ordinal} is text)"
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.password = self.env.get("KVSTORE_PASSWORD")
        self.pod_args = dict(pod_args or {})
        self.admin = admin  # each pod gets an admin port (/readyz) when true
        self.pods = [Pod(self, n) for n in range(size)]
        self.set_master_ordinal(master_ordinal)

    # ---- lifecycle ----

    def start(self, n, timeout=20.0):
        """Starts pod n and waits until it answers PING on its own port."""
        pod = self.pods[n]
        assert not pod.running(), f"{pod.name} is already running"
        pod.starts += 1
        with open(pod.log_path, "ab") as log:
            log.write(f"===== harness: start #{pod.starts} of {pod.name} =====\n".encode())
        try:
            pod.start(timeout=timeout)
        except RuntimeError as e:
            raise AssertionError(f"{pod.name} did not start: {e}\n{self.describe()}") from None
        return pod

    def start_all(self):
        for n in range(len(self.pods)):
            if not self.pods[n].running():
                self.start(n)

    def kill(self, n):
        """SIGKILL, as a node or container crash."""
        pod = self.pods[n]
        pod.kill9()
        return pod.proc.returncode

    def stop(self, n, timeout=30.0):
        """SIGTERM and wait; returns the exit code."""
        return self.pods[n].stop(timeout=timeout)

    def restart(self, n):
        self.stop(n)
        return self.start(n)

    def add_pod(self, start=True):
        """Scale out: kvstore-<size>, with an empty PersistentVolume."""
        pod = Pod(self, len(self.pods))
        assert pod.ordinal <= 9
        self.write_master_ordinal(pod, self.master_ordinal)
        self.pods.append(pod)
        if start:
            self.start(pod.ordinal)
        return pod

    def set_master_ordinal(self, k, pods=None):
        """Rewrites MASTER_ORDINAL atomically (temp file + rename) in the ConfigMap directory of
        every pod, or only of `pods` (the others keep a stale copy)."""
        for n in range(len(self.pods)) if pods is None else pods:
            self.write_master_ordinal(self.pods[n], k)
        if pods is None:
            self.master_ordinal = k

    @staticmethod
    def write_master_ordinal(pod, k):
        tmp = pod.config_dir / ".MASTER_ORDINAL.tmp"
        tmp.write_text(f"{k}\n")
        os.rename(tmp, pod.config_dir / "MASTER_ORDINAL")

    def close(self):
        for pod in self.pods:
            if pod.running():
                pod.proc.send_signal(signal.SIGKILL)
                pod.proc.wait(timeout=10)
            if pod.log and not pod.log.closed:
                pod.log.close()

    def sanitizer_reports(self):
        return [f"{pod.name}: {line}" for pod in self.pods for line in pod.sanitizer_reports()]

    # ---- clients and state ----

    def port(self, n):
        return self.pods[n].port

    def client(self, n, **kwargs):
        kwargs.setdefault("socket_timeout", 10)
        kwargs.setdefault("socket_connect_timeout", 5)
        if self.password:
            kwargs.setdefault("password", self.password)
        return redis.Redis(host=self.pods[n].host, port=self.port(n), **kwargs)

    def call(self, n, *args, timeout=10.0):
        """One command on a fresh raw connection; error replies come back as RespError."""
        with RespConn(self.port(n), timeout=timeout, host=self.pods[n].host) as conn:
            if self.password:
                reply = conn.call("AUTH", self.password)
                assert reply == "OK", reply
            return conn.call(*args)

    def info(self, n):
        text = self.call(n, "INFO", "replication")
        assert not isinstance(text, RespError), text
        return parse_info(text.decode())

    def role(self, n):
        reply = self.call(n, "ROLE")
        assert not isinstance(reply, RespError), reply
        return [x.decode() if isinstance(x, bytes) else x for x in reply]

    def digest(self, n):
        reply = self.call(n, "DIGEST")
        assert isinstance(reply, bytes), reply
        return reply.decode()

    def readyz(self, n):
        """(HTTP status, body) of pod n's /readyz; needs Cluster(admin=True)."""
        port = self.pods[n].admin_port
        assert port, "start the cluster with admin=True"
        try:
            with urllib.request.urlopen(f"http://{self.pods[n].host}:{port}/readyz", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def offset(self, n):
        return int(self.info(n)["master_repl_offset"])

    def running(self):
        return [pod.ordinal for pod in self.pods if pod.running()]

    def find_master(self):
        """The ordinal of a running pod whose ROLE says master, or None."""
        for n in self.running():
            try:
                if self.role(n)[0] == "master":
                    return n
            except (OSError, AssertionError, ConnectionError):
                continue
        return None

    # ---- waiting ----

    def describe(self):
        """Each pod's replication state and log tail, for failure messages."""
        parts = []
        for pod in self.pods:
            state = "not running"
            if pod.proc is not None and pod.proc.poll() is not None:
                state = f"exited {pod.proc.returncode}"
            if pod.running():
                try:
                    info = self.info(pod.ordinal)
                    keep = ("role", "master_port", "master_link_status", "master_repl_offset",
                            "kvstore_epoch", "kvstore_master_seq", "kvstore_full_resyncs",
                            "kvstore_partial_resyncs", "kvstore_link_error", "connected_slaves",
                            "master_failover_state")
                    state = " ".join(f"{k}={info[k]}" for k in keep if k in info)
                    state += f" digest={self.digest(pod.ordinal)}"
                except Exception as e:  # a pod that does not answer is worth showing too
                    state = f"running, not answering: {e!r}"
            parts.append(f"--- {pod.name} (port {pod.port}): {state}\n{pod.log_tail()}")
        return "\n".join(parts)

    def wait_until(self, pred, timeout=20.0, what="condition", interval=0.05):
        """Polls pred() until it returns a true value (returned). Exceptions count as not yet.
        Fails after timeout with what, the last value or exception, and the cluster state."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                last = pred()
                if last:
                    return last
            except Exception as e:  # connection refused while a pod restarts, and the like
                last = e
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; "
                                     f"last: {last!r}\n{self.describe()}")
            time.sleep(interval)

    def state(self, pods=None):
        """{ordinal: (digest, master_repl_offset)} of the given (default: running) pods."""
        return {n: (self.digest(n), self.offset(n)) for n in (pods or self.running())}

    def wait_converged(self, timeout=20.0, pods=None):
        """Waits until the pods (default: all running) hold the same digest and offset, every
        replica's link is up and the master lists every replica as online. Returns the digest."""
        pods = list(pods or self.running())

        def converged():
            master = self.find_master()
            if master is None or master not in pods:
                return False
            state = self.state(pods)
            if len(set(state.values())) != 1:
                return False
            for n in pods:
                if n != master:
                    info = self.info(n)
                    if info["master_link_status"] != "up" or \
                            int(info["master_port"]) != self.port(master):
                        return False
            online = [v for k, v in self.info(master).items()
                      if k.startswith("slave") and v.get("state") == "online"]
            if len(online) < len(pods) - 1:
                return False
            return state[master][0]

        return self.wait_until(converged, timeout, f"pods {pods} to converge")


class Writer(threading.Thread):
    """One client writing SET <prefix>_<id>_<n> = v<id>_<n>, each key once, recording the writes
    acknowledged with +OK. A write that got an error or no reply is not acknowledged (it may or
    may not have landed) and is never retried under the same key. Bounded in count and time.

    follow_master: on an error reply or a connection error, find the master again (ROLE) and go
    on there; otherwise the writer stops at the first connection error and counts error replies.
    """

    def __init__(self, cluster, writer_id, port=None, host="127.0.0.1", stop=None,
                 follow_master=False, prefix="w", max_writes=100000, max_seconds=30.0, pause=0.0):
        super().__init__(daemon=True)
        self.cluster, self.writer_id = cluster, writer_id
        self.port = port
        self.host = host
        self.stop_event = stop or threading.Event()
        self.follow_master = follow_master
        self.prefix, self.max_writes, self.max_seconds = prefix, max_writes, max_seconds
        self.pause = pause
        self.acked = {}  # key -> value
        self.errors = {}  # error text (first word) -> count
        self.failure = None

    def _connect(self):
        if self.follow_master:
            n = self.cluster.find_master()
            if n is None:
                return None
            self.port = self.cluster.port(n)
            self.host = self.cluster.pods[n].host
        kwargs = {"password": self.cluster.password} if self.cluster.password else {}
        return redis.Redis(host=self.host, port=self.port, socket_timeout=10,
                           socket_connect_timeout=2, **kwargs)

    def _note(self, error):
        word = str(error).split(" ", 1)[0] or type(error).__name__
        self.errors[word] = self.errors.get(word, 0) + 1

    def run(self):
        deadline = time.monotonic() + self.max_seconds
        client = None
        try:
            for n in range(self.max_writes):
                if self.stop_event.is_set() or time.monotonic() > deadline:
                    return
                if client is None:
                    client = self._connect()
                    if client is None:
                        time.sleep(0.05)
                        continue
                key = f"{self.prefix}_{self.writer_id}_{n}"
                value = f"v{self.writer_id}_{n}"
                try:
                    if client.set(key, value) is not True:
                        raise AssertionError(f"SET {key} did not reply OK")
                    self.acked[key] = value
                except redis.ResponseError as e:
                    self._note(e)
                    if self.follow_master:
                        client.close()
                        client = None
                        time.sleep(0.02)
                except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                    self._note(e)
                    client.close()
                    client = None
                    if not self.follow_master:
                        return
                    time.sleep(0.02)
                if self.pause:
                    time.sleep(self.pause)
        except Exception as e:  # reported by join_writers
            self.failure = e
        finally:
            if client is not None:
                client.close()


def start_writers(cluster, count, **kwargs):
    stop = kwargs.pop("stop", None) or threading.Event()
    writers = [Writer(cluster, i, stop=stop, **kwargs) for i in range(count)]
    for writer in writers:
        writer.start()
    return stop, writers


def join_writers(stop, writers, timeout=30.0):
    """Stops and joins the writers; returns {key: value} of every acknowledged write."""
    stop.set()
    acked = {}
    for writer in writers:
        writer.join(timeout=timeout)
        assert not writer.is_alive(), f"writer {writer.writer_id} did not stop"
        assert writer.failure is None, f"writer {writer.writer_id}: {writer.failure!r}"
        acked.update(writer.acked)
    return acked


def missing_writes(client, acked):
    """The acknowledged writes (key -> value) that the pod behind client does not hold."""
    keys = sorted(acked)
    missing = {}
    for start in range(0, len(keys), 1000):
        chunk = keys[start:start + 1000]
        for key, got in zip(chunk, client.mget(chunk)):
            if got is None or got.decode() != acked[key]:
                missing[key] = (acked[key], got)
    return missing
