"""Snapshot installs on a store over half of its max_map_bytes, with the real binaries: LMDB does
not reuse the pages a transaction frees within that transaction, so an install that clears the
old data and loads the new one in one transaction needs room for both. Such an install goes in
chunks instead: a replica's full resync and an online restore must then succeed, and a kill -9
in the middle must leave the old data or the complete new data after the restart.
"""
import time

from conftest import run_kvstore
from test_backup import backup, digest, kvctl, master_env

MAX_MAP = ["--max-map-bytes", "32MiB"]
# A backlog of at most 2 MiB, so that the master trims the log past a stopped replica soon.
SMALL_LOG = ["--log-segment-bytes", "1MiB", "--repl-backlog-bytes", "1MiB",
             "--repl-backlog-max-bytes", "2MiB", "--checkpoint-interval-ms", "50"]
KEYS = 5000
# 4000 bytes: one LMDB overflow page (4 KiB) per value, so 5000 keys take about 20 MiB of the
# 32 MiB map: the old and the new key space do not fit together, each one fits alone.
VALUE = 4000


def fill(client, prefix, count=KEYS, fill_byte=b"v"):
    for start in range(0, count, 500):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(count, start + 500)):
            pipe.set(b"%s%06d" % (prefix, i), fill_byte * VALUE)
        pipe.execute()


def used_fraction(info):
    return int(info["kvstore_map_used_bytes"]) / int(info["kvstore_max_map_bytes"])


def resync_counters(cluster, n):
    """Since the pod's start."""
    info = cluster.info(n)
    return int(info["kvstore_full_resyncs"]), int(info["kvstore_partial_resyncs"])


def replica_over_half_its_map_needing_a_full_resync(make_cluster):
    """kvstore-1 (max map 32 MiB) holds about 20 MiB and is stopped; the master has overwritten
    a fifth of it since, past its retained log: kvstore-1's next start is a full resync."""
    cluster = make_cluster(size=2, extra_args=SMALL_LOG, pod_args={1: MAX_MAP})
    cluster.start_all()
    fill(cluster.client(0), b"k")
    old = cluster.wait_converged(timeout=60)
    memory = cluster.client(1).info("memory")
    assert used_fraction(memory) > 0.55, memory
    assert cluster.stop(1) == 0
    offset = cluster.offset(0)
    fill(cluster.client(0), b"k", count=KEYS // 5, fill_byte=b"w")  # 4 MB of log
    cluster.wait_until(
        lambda: int(cluster.info(0)["repl_backlog_first_byte_offset"]) > offset + 1, 30,
        "the master to trim its log past the stopped replica")
    new = cluster.digest(0)
    assert new != old
    return cluster, old, new


def test_a_replica_over_half_its_map_completes_a_full_resync(make_cluster):
    cluster, _, new = replica_over_half_its_map_needing_a_full_resync(make_cluster)
    cluster.start(1)
    cluster.wait_until(lambda: cluster.digest(1) == new, 60,
                       "kvstore-1 to install the full resync")
    assert resync_counters(cluster, 1)[0] == 1
    log = cluster.pods[1].logs()
    assert "cannot install" not in log, cluster.pods[1].log_tail()
    assert "installing it in chunks" in log, cluster.pods[1].log_tail()
    # Attached and streaming afterwards, without another copy.
    cluster.client(0).set("later", "1")
    assert cluster.wait_converged(timeout=30) != new
    assert resync_counters(cluster, 1)[0] == 1
    assert cluster.info(1)["master_link_status"] == "up"
    # And the installed data survives a restart.
    assert cluster.stop(1) == 0
    cluster.start(1)
    assert cluster.digest(1) == cluster.digest(0)


def served_digest(cluster, n, timeout=60):
    """DIGEST once pod n serves reads: a refusal during an install is no state (never a partial
    key space), so it is waited out."""
    deadline = time.time() + timeout
    while True:
        reply = cluster.call(n, "DIGEST")
        if isinstance(reply, bytes):
            return reply.decode()
        assert "snapshot install is in progress" in str(reply), reply
        assert time.time() < deadline, f"kvstore-{n} refused reads for {timeout} s: {reply}"
        time.sleep(0.05)


def test_a_replica_killed_during_a_chunked_install_restarts_with_old_or_complete_data(
        make_cluster):
    cluster, old, new = replica_over_half_its_map_needing_a_full_resync(make_cluster)
    cluster.start(1)
    pod = cluster.pods[1]
    # Past the point of no return: the old key space is gone, the new one is being loaded.
    cluster.wait_until(lambda: "the old key space is cleared" in pod.logs(), 60,
                       "kvstore-1 to clear its key space for a chunked install", interval=0.002)
    cluster.kill(1)
    finished = "full resync done" in pod.logs()
    cluster.start(1)  # Open installs the kept snapshot file again before it answers PING
    resumed = "a snapshot install was interrupted" in pod.logs()
    print("finished before the kill:", finished, "resumed at the start:", resumed)
    assert finished or resumed, pod.log_tail()
    assert "cannot finish the interrupted snapshot install" not in pod.logs()
    # The complete new data at once, never a part of it (nor an empty store).
    assert served_digest(cluster, 1) == new, pod.log_tail()
    assert cluster.info(1)["kvstore_full_resyncs"] == "0"  # no second copy needed
    cluster.wait_until(lambda: cluster.digest(1) == new and
                       cluster.info(1)["master_link_status"] == "up", 60,
                       "kvstore-1 to attach again")
    assert old != new


def backup_and_target_over_half_its_map(make_server, tmp_path):
    """A backup of a KEYS-key space, and a server (max map 32 MiB) over half full with other
    keys, to restore it into. Returns (the backup file, its DIGEST, the target)."""
    source = make_server(env=master_env())
    fill(source.client(), b"restored:", fill_byte=b"r")
    backup(source, tmp_path / "b.kvbackup")
    expected = digest(source)
    target = make_server(args=MAX_MAP, env=master_env())
    fill(target.client(), b"old:")
    info = target.client().info("memory")
    assert used_fraction(info) > 0.55, info
    return tmp_path / "b.kvbackup", expected, target


def test_an_online_restore_larger_than_half_the_targets_map(make_server, tmp_path):
    file, expected, target = backup_and_target_over_half_its_map(make_server, tmp_path)
    result = kvctl(target.port, "restore", file, "--force")
    assert result.returncode == 0, result.stderr.decode() + target.logs()[-3000:]
    assert digest(target) == expected
    assert target.client().dbsize() == KEYS
    assert "installing it in chunks" in target.logs()
    # Writes go on, and all of it survives a restart.
    assert target.client().set("after", "restore")
    after = digest(target)
    assert target.stop() == 0
    target.start()
    assert digest(target) == after


def test_an_offline_restore_larger_than_half_the_targets_map(make_server, tmp_path):
    file, expected, target = backup_and_target_over_half_its_map(make_server, tmp_path)
    assert target.stop() == 0
    result = run_kvstore(["restore", "--from", str(file), "--data-dir",
                          str(target.data_dir), "--force", *MAX_MAP], timeout=120)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert b"installing it in chunks" in result.stdout + result.stderr
    target.start()
    assert digest(target) == expected
    assert target.client().dbsize() == KEYS
