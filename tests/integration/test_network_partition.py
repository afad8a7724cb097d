"""Network partitions between the master and its replicas, made with a real network namespace.

kvstore-0 (the master) runs in a namespace of its own, reached over two veth links: the
replicas (in the host's namespace, on loopback) attach over the replication link, and the test
talks to the master over the client link. Setting the replication link down drops packets
silently, as a failed switch or a partitioned node does: no RST and no FIN reach either side, so
each must notice through its own timeouts (a replica: no byte for 5 s while heartbeats come
every second; the master: min_replicas_max_lag, sync_timeout_ms).

Needs root (ip netns); the tests are skipped where namespaces cannot be made.
"""
import os
import subprocess
import time

import pytest

from cluster import join_writers, missing_writes, start_writers
from conftest import RespError


def ip(*args, check=True):
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


class MasterNamespace:
    """A network namespace with two veth links to the host: replication (10.254.X.0/30) and
    client (10.254.X.4/30). X comes from the pid, so that parallel runs do not collide."""

    def __init__(self):
        tag = os.getpid()
        self.name = f"kvpart{tag}"
        net = f"10.254.{tag % 250}"
        self.replication_link = f"kvr{tag}"  # the host's end; the namespace's is kvrn<tag>
        self.replication_ip = f"{net}.2"
        self.client_ip = f"{net}.6"
        ip("netns", "del", self.name, check=False)  # left over by a killed run
        if os.geteuid() != 0:
            pytest.skip("network namespaces need root")
        made = ip("netns", "add", self.name, check=False)
        if made.returncode != 0:
            pytest.skip(f"cannot make a network namespace here: {made.stderr.strip()}")
        try:
            self.exec("ip", "link", "set", "lo", "up")
            for host_end, inside, host_ip, inside_ip in (
                    (self.replication_link, f"kvrn{tag}", f"{net}.1", self.replication_ip),
                    (f"kvc{tag}", f"kvcn{tag}", f"{net}.5", self.client_ip)):
                ip("link", "del", host_end, check=False)
                ip("link", "add", host_end, "type", "veth", "peer", "name", inside)
                ip("link", "set", inside, "netns", self.name)
                ip("addr", "add", f"{host_ip}/30", "dev", host_end)
                ip("link", "set", host_end, "up")
                self.exec("ip", "addr", "add", f"{inside_ip}/30", "dev", inside)
                self.exec("ip", "link", "set", inside, "up")
        except Exception:
            self.close()
            raise

    def exec(self, *command):
        return ip("netns", "exec", self.name, *command)

    def partition(self):
        ip("link", "set", self.replication_link, "down")

    def heal(self):
        ip("link", "set", self.replication_link, "up")

    def close(self):
        ip("netns", "del", self.name, check=False)  # deletes the veth pairs too


@pytest.fixture
def partitioned_cluster(make_cluster):
    """make(extra_args) -> a started, converged three-pod Cluster whose master runs in a
    MasterNamespace (returned as cluster.namespace)."""
    namespaces = []

    def make(extra_args=()):
        namespace = MasterNamespace()
        namespaces.append(namespace)
        cluster = make_cluster(size=3, extra_args=list(extra_args), admin=True)
        master = cluster.pods[0]
        for pod in cluster.pods[1:]:
            pod.env["MASTER_ADDRESS"] = f"{namespace.replication_ip}:{master.port}"
        master.bind = "0.0.0.0"
        master.host = namespace.client_ip
        in_namespace = master.command
        master.command = lambda: ["ip", "netns", "exec", namespace.name, *in_namespace()]
        cluster.namespace = namespace
        cluster.start_all()
        cluster.wait_converged()
        return cluster

    yield make
    for namespace in namespaces:
        namespace.close()


def resync_counters(cluster, n):
    info = cluster.info(n)
    return int(info["kvstore_full_resyncs"]), int(info["kvstore_partial_resyncs"])


def test_partitioned_replicas_report_the_link_down_and_resume_after_heal(partitioned_cluster):
    cluster = partitioned_cluster()
    cluster.client(0).mset({f"k{i}": f"v{i}" for i in range(200)})
    cluster.wait_converged()
    counters = {n: resync_counters(cluster, n) for n in (1, 2)}
    stop, writers = start_writers(cluster, 2, port=cluster.port(0), host=cluster.pods[0].host,
                                  pause=0.002, max_seconds=60)
    time.sleep(0.5)
    cluster.namespace.partition()
    cut = time.monotonic()
    for n in (1, 2):
        cluster.wait_until(lambda: cluster.info(n)["master_link_status"] == "down", 15,
                           f"kvstore-{n} to notice the silent partition")
    noticed = time.monotonic() - cut
    assert noticed < 12, f"the dead link was reported after {noticed:.1f} s"
    for n in (1, 2):
        info = cluster.info(n)
        assert int(info["master_last_io_seconds_ago"]) >= 4, info
        status, body = cluster.readyz(n)
        assert status == 200 and "master link down" in body, (status, body)
        assert cluster.client(n).get("k199") == b"v199", "reads go on from local data"
    # The master takes writes all along (async mode, no min_replicas_to_write), and shows each
    # replica's acknowledgement age growing.
    time.sleep(1.0)
    replicas = [v for k, v in cluster.info(0).items() if k.startswith("slave")]
    assert replicas and all(int(r["lag"]) >= 4 for r in replicas), replicas
    assert all(writer.is_alive() and writer.acked for writer in writers)
    during = sum(len(writer.acked) for writer in writers)

    cluster.namespace.heal()
    time.sleep(1.0)
    acked = join_writers(stop, writers)
    assert len(acked) > during, "writes go on after the heal"
    cluster.wait_converged(timeout=40)
    for n in (1, 2):
        assert not missing_writes(cluster.client(n), acked)
        full, partial = resync_counters(cluster, n)
        assert full == counters[n][0] and partial > counters[n][1], \
            f"kvstore-{n} resumed with {full} full and {partial} partial resyncs " \
            f"(before: {counters[n]}): the log still covers it, so no full copy is due"


def test_an_isolated_master_refuses_writes_under_min_replicas_to_write(partitioned_cluster):
    cluster = partitioned_cluster(["--min-replicas-to-write", "1", "--min-replicas-max-lag", "2"])
    assert cluster.call(0, "SET", "before", "1") == "OK"
    cluster.namespace.partition()
    cut = time.monotonic()

    def refused():
        reply = cluster.call(0, "SET", "probe", "x")
        return isinstance(reply, RespError) and str(reply).startswith("NOREPLICAS")
    cluster.wait_until(refused, 10, "the isolated master to refuse writes", interval=0.2)
    assert time.monotonic() - cut < 8, "min_replicas_max_lag is 2 s, heartbeats come every 1 s"
    reply = cluster.call(0, "SET", "refused", "x")
    assert isinstance(reply, RespError) and str(reply).startswith("NOREPLICAS"), reply
    assert cluster.client(0).get("refused") is None, "a refused write must not land"
    assert cluster.client(0).get("before") == b"1", "reads still work"

    cluster.namespace.heal()
    cluster.wait_until(lambda: cluster.call(0, "SET", "after", "2") == "OK", 30,
                       "writes to be accepted once the replicas are back", interval=0.2)
    cluster.wait_converged(timeout=30)
    for n in (1, 2):
        assert cluster.client(n).mget("before", "refused", "after") == [b"1", None, b"2"]


def test_sync_mode_write_in_a_partition_gets_noreplicas_then_replicates(partitioned_cluster):
    cluster = partitioned_cluster(["--replication-mode", "sync", "--sync-replicas", "1",
                                   "--sync-timeout-ms", "500"])
    assert cluster.call(0, "SET", "before", "1") == "OK"
    cluster.namespace.partition()
    started = time.monotonic()
    reply = cluster.call(0, "SET", "during", "2")
    elapsed = time.monotonic() - started
    assert isinstance(reply, RespError) and str(reply).startswith("NOREPLICAS"), reply
    assert 0.4 <= elapsed < 3.0, f"-NOREPLICAS after {elapsed:.2f} s, not sync_timeout_ms"
    assert cluster.client(0).get("during") == b"2", "the write stays on the master"
    for n in (1, 2):
        assert cluster.client(n).get("during") is None

    cluster.namespace.heal()
    cluster.wait_converged(timeout=40)
    for n in (1, 2):
        assert cluster.client(n).mget("before", "during") == [b"1", b"2"], \
            "the refused write reaches the replicas once the partition heals"
    started = time.monotonic()
    assert cluster.call(0, "SET", "after", "3") == "OK"
    assert time.monotonic() - started < 1.0
