"""A master that starts with an empty data directory (a new cluster, or a master whose volume
was lost or replaced) waits empty_master_wait_ms for its replicas before it opens its epoch: a
replica with data keeps it read-only, so the empty store never becomes the history the replicas
resync to (which erased the data on every pod)."""
import os
import shutil
import signal
import subprocess
import time

from conftest import KVCTL_BIN, RespError

WAIT = {"EMPTY_MASTER_WAIT_MS": "15000"}  # the default (the harness sets 0 for other tests)


def write_refusal(cluster, n):
    reply = cluster.call(n, "SET", "probe", "x")
    return str(reply) if isinstance(reply, RespError) else None


def test_a_new_cluster_opens_its_epoch_after_the_wait(make_cluster, tmp_path):
    cluster = make_cluster(size=3, env={"EMPTY_MASTER_WAIT_MS": "2500"})
    started = time.monotonic()
    cluster.start_all()
    refusal = write_refusal(cluster, 0)
    assert refusal and refusal.startswith("READONLY this master started with an empty data "
                                          "directory"), refusal
    assert cluster.info(0)["master_failover_state"] == "waiting-for-replicas"
    backup = subprocess.run([KVCTL_BIN, "--port", str(cluster.port(0)), "backup", "--out",
                             str(tmp_path / "b.kvbackup")], capture_output=True, timeout=30)
    assert backup.returncode == 1 and b"has not opened its epoch" in backup.stderr, backup
    # Empty replicas do not end the wait: one with data may ask next.
    cluster.wait_until(lambda: write_refusal(cluster, 0) is None, 10, "the wait to end")
    assert time.monotonic() - started >= 2.0
    cluster.wait_converged()
    assert cluster.info(0)["master_failover_state"] == "no-failover"
    assert cluster.client(2).get("probe") == b"x"


def test_a_lone_empty_master_opens_after_the_wait(make_cluster):
    cluster = make_cluster(size=1, env={"EMPTY_MASTER_WAIT_MS": "1500"})
    cluster.start(0)
    started = time.monotonic()
    assert write_refusal(cluster, 0), "writes wait for the replicas to report"
    cluster.wait_until(lambda: write_refusal(cluster, 0) is None, 10, "the wait to end")
    assert 1.0 <= time.monotonic() - started < 5
    assert cluster.client(0).get("probe") == b"x"


def test_a_master_whose_volume_was_lost_does_not_erase_its_replicas(make_cluster):
    cluster = make_cluster(size=3, env={"EMPTY_MASTER_WAIT_MS": "1000"})
    cluster.start(0)
    cluster.start(1)
    cluster.wait_until(lambda: write_refusal(cluster, 0) is None, 10, "the epoch to open")
    cluster.client(0).mset({f"k{i}": f"v{i}" for i in range(100)})
    digest = cluster.wait_converged()

    # kvstore-0 comes back on a new, empty volume (a lost node with local storage, a deleted
    # PVC), still named master; a new, empty pod (kvstore-2) asks to attach first.
    # kvstore-1 is held back (SIGSTOP) until the empty pod has asked: an empty replica asking
    # first must not end the wait.
    os.kill(cluster.pods[1].proc.pid, signal.SIGSTOP)
    try:
        cluster.kill(0)
        shutil.rmtree(cluster.pods[0].data_dir)
        cluster.pods[0].env.update(WAIT)
        cluster.start(0)
        cluster.start(2)
        cluster.wait_until(lambda: "waits for its replicas" in
                           cluster.info(2).get("kvstore_link_error", ""), 10,
                           "the empty kvstore-2 to ask first")
    finally:
        os.kill(cluster.pods[1].proc.pid, signal.SIGCONT)
    cluster.wait_until(lambda: cluster.info(0)["master_failover_state"] == "empty-master-held",
                       15, "the replica with data to hold the empty master")
    refusal = write_refusal(cluster, 0)
    assert refusal and "holds data" in refusal and "MASTER_ORDINAL" in refusal, refusal
    assert "empty data directory, but a replica holds data" in cluster.pods[0].logs()
    time.sleep(2.0)  # the replicas keep asking; none is resynced
    info = cluster.info(1)
    assert info["master_link_status"] == "down", info
    assert "EMPTYMASTER" in info.get("kvstore_link_error", ""), info
    assert cluster.digest(1) == digest, "kvstore-1 lost its data to an empty master"
    assert cluster.client(1).get("k99") == b"v99"

    # The operator promotes a replica that holds the data; the empty pods resync from it.
    cluster.set_master_ordinal(1)
    cluster.wait_until(lambda: cluster.call(1, "SET", "after", "1") == "OK", 30,
                       "kvstore-1 to take over")
    cluster.wait_converged(timeout=30)
    for n in range(3):
        assert cluster.client(n).get("k42") == b"v42"
        assert cluster.client(n).dbsize() == 102  # k0..k99, probe and after


def test_sigterm_during_the_wait_stops_at_once(make_cluster):
    cluster = make_cluster(size=1, env=WAIT)
    cluster.start(0)
    assert cluster.info(0)["master_failover_state"] == "waiting-for-replicas"
    started = time.monotonic()
    assert cluster.stop(0) == 0
    assert time.monotonic() - started < 5, "the shutdown waited for the empty-master wait"
