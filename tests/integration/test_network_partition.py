"""Network partitions, made with real network namespaces.

Each pod runs in a network namespace of its own, as in Kubernetes: one address per pod on a
shared network (a bridge, pod N at 10.254.X.1N), the same port 5555 in every pod, and the master
found by address (MASTER_ADDRESS=10.254.X.1{ordinal}:5555). The test reaches each pod over a
separate client link (a veth pair of its own), which partitions leave alone, so it can watch
both sides of one. Isolating a pod sets its veth on the bridge down: packets are dropped
silently, as by a failed switch or a partitioned node, and no RST or FIN reaches either side, so
each must notice through its own timeouts (a replica: no byte for 5 s while heartbeats come every
second; the master: min_replicas_max_lag, sync_timeout_ms).

Needs root (ip netns); the tests are skipped where namespaces cannot be made.
"""
import os
import subprocess
import time

import pytest

from cluster import join_writers, missing_writes, start_writers
from conftest import RespError

PORT = 5555


def ip(*args, check=True):
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


class PodNetwork:
    """The namespaces, bridge and links of one cluster; X (and the names) come from the pid, so
    that parallel runs do not collide."""

    def __init__(self, size):
        if os.geteuid() != 0:
            pytest.skip("network namespaces need root")
        self.tag = os.getpid()
        self.net = f"10.254.{self.tag % 250}"
        self.client_net = f"10.253.{self.tag % 250}"
        self.bridge = f"kvb{self.tag}"
        self.size = size
        self.clean()  # what a killed run with the same pid left
        made = ip("netns", "add", self.namespace(0), check=False)
        if made.returncode != 0:
            pytest.skip(f"cannot make a network namespace here: {made.stderr.strip()}")
        try:
            ip("link", "add", self.bridge, "type", "bridge")
            ip("addr", "add", f"{self.net}.1/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
            for n in range(size):
                self.add_pod(n)
        except Exception:
            self.clean()
            raise

    def namespace(self, n):
        return f"kvpod{self.tag}-{n}"

    def pod_ip(self, n):
        return f"{self.net}.1{n}"

    def client_ip(self, n):
        return f"{self.client_net}.{4 * n + 2}"

    def master_address(self):
        return f"{self.net}.1{{ordinal}}:{PORT}"

    def exec(self, n, *command):
        return ip("netns", "exec", self.namespace(n), *command)

    def add_pod(self, n):
        if n:
            ip("netns", "add", self.namespace(n))
        self.exec(n, "ip", "link", "set", "lo", "up")
        # The pod's address on the cluster network, its veth's other end on the bridge.
        ip("link", "add", f"kvn{self.tag}{n}", "type", "veth", "peer", "name", "cluster0",
           "netns", self.namespace(n))
        ip("link", "set", f"kvn{self.tag}{n}", "master", self.bridge, "up")
        self.exec(n, "ip", "addr", "add", f"{self.pod_ip(n)}/24", "dev", "cluster0")
        self.exec(n, "ip", "link", "set", "cluster0", "up")
        # The test's own link to the pod.
        ip("link", "add", f"kvc{self.tag}{n}", "type", "veth", "peer", "name", "client0",
           "netns", self.namespace(n))
        ip("addr", "add", f"{self.client_net}.{4 * n + 1}/30", "dev", f"kvc{self.tag}{n}")
        ip("link", "set", f"kvc{self.tag}{n}", "up")
        self.exec(n, "ip", "addr", "add", f"{self.client_ip(n)}/30", "dev", "client0")
        self.exec(n, "ip", "link", "set", "client0", "up")

    def isolate(self, n):
        ip("link", "set", f"kvn{self.tag}{n}", "down")

    def heal(self, n):
        ip("link", "set", f"kvn{self.tag}{n}", "up")

    def clean(self):
        """Removes the links (deleting one end of a veth pair deletes both) and namespaces; the
        kernel would remove a namespace's links only once its last process is gone, later."""
        for n in range(self.size):
            ip("link", "del", f"kvn{self.tag}{n}", check=False)
            ip("link", "del", f"kvc{self.tag}{n}", check=False)
            ip("netns", "del", self.namespace(n), check=False)
        ip("link", "del", self.bridge, check=False)


@pytest.fixture
def netns_cluster(make_cluster):
    """make(extra_args) -> a started, converged three-pod Cluster, each pod in its own network
    namespace (cluster.network: the PodNetwork)."""
    networks, clusters = [], []

    def make(extra_args=()):
        network = PodNetwork(3)
        networks.append(network)
        cluster = make_cluster(size=3, extra_args=list(extra_args), admin=True)
        clusters.append(cluster)
        for pod in cluster.pods:
            pod.port = PORT
            pod.bind = "0.0.0.0"
            pod.host = network.client_ip(pod.ordinal)
            pod.env["MASTER_ADDRESS"] = network.master_address()
            in_namespace = pod.command
            pod.command = lambda n=pod.ordinal, command=in_namespace: [
                "ip", "netns", "exec", network.namespace(n), *command()]
        cluster.network = network
        cluster.start_all()
        cluster.wait_converged()
        return cluster

    yield make
    for cluster in clusters:
        cluster.close()  # no process left in the namespaces
    for network in networks:
        network.clean()


def resync_counters(cluster, n):
    info = cluster.info(n)
    return int(info["kvstore_full_resyncs"]), int(info["kvstore_partial_resyncs"])


def is_refusal(reply, prefix):
    return isinstance(reply, RespError) and str(reply).startswith(prefix)


def test_partitioned_replicas_report_the_link_down_and_resume_after_heal(netns_cluster):
    cluster = netns_cluster()
    cluster.client(0).mset({f"k{i}": f"v{i}" for i in range(200)})
    cluster.wait_converged()
    counters = {n: resync_counters(cluster, n) for n in (1, 2)}
    stop, writers = start_writers(cluster, 2, port=PORT, host=cluster.pods[0].host,
                                  pause=0.002, max_seconds=60)
    time.sleep(0.5)
    cluster.network.isolate(0)
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

    cluster.network.heal(0)
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


def test_an_isolated_master_refuses_writes_under_min_replicas_to_write(netns_cluster):
    cluster = netns_cluster(["--min-replicas-to-write", "1", "--min-replicas-max-lag", "2"])
    assert cluster.call(0, "SET", "before", "1") == "OK"
    cluster.network.isolate(0)
    cut = time.monotonic()
    cluster.wait_until(lambda: is_refusal(cluster.call(0, "SET", "probe", "x"), "NOREPLICAS"),
                       10, "the isolated master to refuse writes", interval=0.2)
    assert time.monotonic() - cut < 8, "min_replicas_max_lag is 2 s, heartbeats come every 1 s"
    reply = cluster.call(0, "SET", "refused", "x")
    assert is_refusal(reply, "NOREPLICAS"), reply
    assert cluster.client(0).get("refused") is None, "a refused write must not land"
    assert cluster.client(0).get("before") == b"1", "reads still work"

    cluster.network.heal(0)
    cluster.wait_until(lambda: cluster.call(0, "SET", "after", "2") == "OK", 30,
                       "writes to be accepted once the replicas are back", interval=0.2)
    cluster.wait_converged(timeout=30)
    for n in (1, 2):
        assert cluster.client(n).mget("before", "refused", "after") == [b"1", None, b"2"]


def test_sync_mode_write_in_a_partition_gets_noreplicas_then_replicates(netns_cluster):
    cluster = netns_cluster(["--replication-mode", "sync", "--sync-replicas", "1",
                             "--sync-timeout-ms", "500"])
    assert cluster.call(0, "SET", "before", "1") == "OK"
    cluster.network.isolate(0)
    started = time.monotonic()
    reply = cluster.call(0, "SET", "during", "2")
    elapsed = time.monotonic() - started
    assert is_refusal(reply, "NOREPLICAS"), reply
    assert 0.4 <= elapsed < 3.0, f"-NOREPLICAS after {elapsed:.2f} s, not sync_timeout_ms"
    assert cluster.client(0).get("during") == b"2", "the write stays on the master"
    for n in (1, 2):
        assert cluster.client(n).get("during") is None

    cluster.network.heal(0)
    cluster.wait_converged(timeout=40)
    for n in (1, 2):
        assert cluster.client(n).mget("before", "during") == [b"1", b"2"], \
            "the refused write reaches the replicas once the partition heals"
    started = time.monotonic()
    assert cluster.call(0, "SET", "after", "3") == "OK"
    assert time.monotonic() - started < 1.0


SPLIT_BRAIN_SETTINGS = {
    "async": ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "2"],
    # Both replicas acknowledge every write: whichever is promoted has them all.
    "sync": ["--replication-mode", "sync", "--sync-replicas", "2", "--sync-timeout-ms", "500"],
}


@pytest.mark.parametrize("mode", SPLIT_BRAIN_SETTINGS.keys())
def test_promotion_while_the_master_is_cut_off(netns_cluster, mode):
    """Split brain, as a node partition makes it: kvstore-0 (master) is cut off, and its kubelet
    does not get the ConfigMap change that promotes kvstore-1. kvstore-1 cannot fence it, takes
    over after promotion_timeout_ms, and kvstore-2 follows. After the heal and the ConfigMap
    change, kvstore-0 detects its divergence and resyncs.
    - async: with min_replicas_to_write the old master stops taking writes once its replicas'
      acknowledgements are min_replicas_max_lag old, so what it acknowledged alone (lost when it
      rejoins) is bounded by that window; the test reports it.
    - sync: the old master acknowledges nothing alone (-NOREPLICAS), so nothing is lost."""
    cluster = netns_cluster(SPLIT_BRAIN_SETTINGS[mode] + ["--promotion-timeout-ms", "2000"])
    stop, old_writers = start_writers(cluster, 2, port=PORT, host=cluster.pods[0].host,
                                      prefix="old", pause=0.002, max_seconds=60)
    time.sleep(1.0)
    # Writes acknowledged this long before the cut had reached the replicas (the async lag on
    # loopback is well under that): none of them may be lost.
    settled = {writer.writer_id: len(writer.acked) for writer in old_writers}
    time.sleep(0.5)
    cluster.network.isolate(0)
    cut = time.monotonic()
    cluster.set_master_ordinal(1, pods=[1, 2])
    cluster.wait_until(lambda: is_refusal(cluster.call(0, "SET", "probe", "x"), "NOREPLICAS"),
                       10, "the cut-off master to refuse writes", interval=0.1)
    refusing = time.monotonic() - cut
    assert refusing < 5, "min_replicas_max_lag is 2 s, heartbeats come every 1 s"
    alone = {writer.writer_id: len(writer.acked) for writer in old_writers}

    def new_master_serves():
        # In sync mode with sync_replicas 2, the new master has one replica until the old one
        # rejoins: its writes are durable on it but answered -NOREPLICAS.
        reply = cluster.call(1, "SET", "new-master", "1")
        return cluster.role(1)[0] == "master" and (reply == "OK" or
                                                   (mode == "sync" and
                                                    is_refusal(reply, "NOREPLICAS")))
    cluster.wait_until(new_master_serves, 30, "kvstore-1 to take over without the old master",
                       interval=0.1)
    took_over = time.monotonic() - cut
    new_stop, new_writers = start_writers(cluster, 1, port=PORT, host=cluster.pods[1].host,
                                          prefix="new", pause=0.002, max_seconds=60)
    cluster.wait_until(lambda: cluster.client(2).get("new-master") == b"1", 20,
                       "kvstore-2 to follow kvstore-1")
    time.sleep(1.0)
    old_acked = join_writers(stop, old_writers)
    for writer in old_writers:  # one write may have been in flight when refusals began
        assert len(writer.acked) <= alone[writer.writer_id] + 1, \
            "the cut-off master went on acknowledging writes"

    cluster.network.heal(0)
    cluster.set_master_ordinal(1)  # its kubelet syncs the ConfigMap
    cluster.wait_until(lambda: cluster.info(0)["master_link_status"] == "up", 30,
                       "kvstore-0 to step down and attach to kvstore-1")
    time.sleep(1.0)
    new_acked = join_writers(new_stop, new_writers)
    final = cluster.wait_converged(timeout=40)
    assert all(cluster.digest(n) == final for n in range(3))
    assert new_acked and not missing_writes(cluster.client(0), new_acked), \
        "every write the new master acknowledged is on every pod"
    lost = missing_writes(cluster.client(1), old_acked)
    before_cut = {key for writer in old_writers
                  for key in list(writer.acked)[:settled[writer.writer_id]]}
    assert not before_cut & set(lost), "writes replicated before the cut were lost"
    window = len(old_acked) - len(before_cut)
    print(f"split brain ({mode}): kvstore-1 took over {took_over:.1f} s after the cut; the cut-off "
          f"master refused writes {refusing:.1f} s after it; {len(lost)} of the {len(old_acked)} "
          f"writes it acknowledged were lost, all within its last {window} (the 0.5 s before the "
          f"cut and the time until it refused)")
    if mode == "sync":
        assert not lost, "sync mode: an acknowledged write is on both replicas"
        assert len(old_acked) > 100, "the writers ran"
