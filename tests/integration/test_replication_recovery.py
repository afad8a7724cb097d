"""Replicas recovering with real processes (docs: BRIEF "Failover scenarios"): a replica killed -9
mid-stream (scenario 2), the master down for a while (scenario 4), scale out to kvstore-3 while
writes go on (scenario 5), and a replica away past the trimmed log (scenario 6)."""
import time

from cluster import join_writers, missing_writes, start_writers


def resync_counters(cluster, n):
    info = cluster.info(n)
    return int(info["kvstore_full_resyncs"]), int(info["kvstore_partial_resyncs"])


def test_replica_kill9_resumes_partially_and_converges(make_cluster):
    cluster = make_cluster(size=3)
    cluster.start_all()
    cluster.wait_converged()
    stop, writers = start_writers(cluster, 4, port=cluster.port(0))
    time.sleep(0.7)
    cluster.kill(2)
    time.sleep(0.5)
    cluster.start(2)
    time.sleep(0.7)  # writes go on while it catches up
    acked = join_writers(stop, writers)
    assert len(acked) > 50
    assert all(not w.errors for w in writers), [w.errors for w in writers]
    digest = cluster.wait_converged()
    assert cluster.digest(2) == digest
    full, partial = resync_counters(cluster, 2)
    assert (full, partial) == (0, 1), \
        f"kvstore-2 after a crash: {full} full and {partial} partial resyncs, expected 0 and 1"
    assert not missing_writes(cluster.client(2), acked)


def test_master_down_replicas_serve_stale_reads_then_resume(make_cluster):
    cluster = make_cluster(size=3, admin=True)
    cluster.start_all()
    cluster.client(0).mset({f"k{i}": "old" for i in range(100)})
    before = cluster.wait_converged()
    counters = {n: resync_counters(cluster, n) for n in (1, 2)}
    for n in (1, 2):
        status, body = cluster.readyz(n)
        assert status == 200 and f"replica of 127.0.0.1:{cluster.port(0)}" in body, body
    cluster.kill(0)
    for n in (1, 2):
        cluster.wait_until(lambda: cluster.info(n)["master_link_status"] == "down", 10,
                           f"kvstore-{n} to report the broken link")
        # Still ready, so kvstore-read keeps its endpoints; the body says the link is down.
        status, body = cluster.readyz(n)
        assert status == 200 and "master link down" in body and "stale" in body, (status, body)
    time.sleep(3.0)  # down for a while: replicas back off between attempts
    for n in (1, 2):
        info = cluster.info(n)
        assert info["role"] == "slave" and info["master_link_status"] == "down", info
        assert cluster.role(n)[3] != "connected", cluster.role(n)
        assert cluster.client(n).get("k42") == b"old", "stale reads are still served"
        assert cluster.digest(n) == before
        assert str(cluster.call(n, "SET", "k1", "x")).startswith("READONLY"), \
            "a replica that lost its master must not take writes"
    # A new replica with no data yet has nothing to serve: not ready while the master is away.
    newcomer = cluster.add_pod().ordinal
    status, body = cluster.readyz(newcomer)
    assert status == 503 and "no data yet" in body, (status, body)
    # A replica restarted cleanly meanwhile (a rolling restart, a node drain) stopped attached
    # and caught up: it stays ready with its data, twice in a row.
    for _ in range(2):
        cluster.restart(2)
        status, body = cluster.readyz(2)
        assert status == 200 and "master link down" in body and "stale" in body, (status, body)
        assert cluster.client(2).get("k42") == b"old"
    # Not one that crashed: it cannot tell what it had applied against its master (a pod
    # demoted from master looks the same, and may hold writes the new master never had).
    cluster.kill(2)
    cluster.start(2)
    counters[2] = resync_counters(cluster, 2)  # a new process counts from 0
    status, body = cluster.readyz(2)
    assert status == 503 and "not attached since start" in body, (status, body)
    assert cluster.readyz(1)[0] == 200
    # Nor, after a clean stop, one that follows another master at its restart.
    cluster.restart(1)
    cluster.stop(1)
    cluster.write_master_ordinal(cluster.pods[1], 2)
    cluster.start(1)
    status, body = cluster.readyz(1)
    assert status == 503 and "not attached since start" in body, (status, body)
    cluster.stop(1)
    cluster.write_master_ordinal(cluster.pods[1], 0)
    cluster.start(1)
    counters[1] = resync_counters(cluster, 1)
    status, body = cluster.readyz(1)
    assert status == 503, (status, body)  # the record was used once, by the start that followed 2
    cluster.start(0)
    cluster.client(0).mset({f"k{i}": "new" for i in range(100)})
    after = cluster.wait_converged()
    assert after != before
    for n in (1, 2):
        assert cluster.client(n).get("k42") == b"new"
        assert cluster.readyz(n)[0] == 200
        full, partial = resync_counters(cluster, n)
        assert full == counters[n][0], f"kvstore-{n} needed a full resync"
        assert partial > counters[n][1], f"kvstore-{n} did not resume partially"


def test_a_clean_stop_counts_only_for_the_next_start_as_a_replica_of_that_master(make_cluster):
    """The record of a clean stop while attached (the replica stays ready across a restart
    while its master is away) must not outlive a start as master: a pod promoted, then demoted
    to follow the same master again, holds writes that master never had."""
    # The promotion at its start tries to fence kvstore-0 (down) for promotion_timeout.
    cluster = make_cluster(size=2, admin=True, extra_args=["--promotion-timeout-ms", "300"])
    cluster.start_all()
    cluster.client(0).mset({f"k{i}": "v" for i in range(20)})
    cluster.wait_converged()
    cluster.kill(0)
    cluster.restart(1)
    assert cluster.readyz(1)[0] == 200, cluster.readyz(1)
    cluster.stop(1)
    cluster.write_master_ordinal(cluster.pods[1], 1)
    cluster.start(1)
    cluster.wait_until(lambda: cluster.info(1)["role"] == "master", 10, "kvstore-1 to take over")
    cluster.client(1).set("only-on-1", "x")
    cluster.stop(1)
    cluster.write_master_ordinal(cluster.pods[1], 0)
    cluster.start(1)
    status, body = cluster.readyz(1)
    assert status == 503 and "not attached since start" in body, (status, body)


def test_scale_out_while_writing(make_cluster):
    cluster = make_cluster(size=3)
    cluster.start_all()
    cluster.client(0).mset({f"pre{i}": "x" * 100 for i in range(3000)})
    cluster.wait_converged()
    master_pid = cluster.pods[0].proc.pid
    stop, writers = start_writers(cluster, 2, port=cluster.port(0))
    time.sleep(0.5)
    pod = cluster.add_pod()
    assert pod.name == "kvstore-3"
    cluster.wait_until(lambda: cluster.info(3)["master_link_status"] == "up", 20,
                       "kvstore-3 to attach")
    time.sleep(0.5)
    acked = join_writers(stop, writers)
    assert all(not w.errors for w in writers), [w.errors for w in writers]
    assert len(acked) > 20
    digest = cluster.wait_converged()
    assert cluster.digest(3) == digest
    assert cluster.pods[0].proc.pid == master_pid and cluster.pods[0].starts == 1, \
        "the master was restarted"
    assert cluster.info(0)["connected_slaves"] == "3"
    assert not missing_writes(cluster.client(3), acked)
    full, partial = resync_counters(cluster, 3)
    assert full + partial == 1, f"kvstore-3: {full} full, {partial} partial resyncs"


SMALL_LOG = ["--log-segment-bytes", "1MiB", "--repl-backlog-bytes", "1MiB",
             "--repl-backlog-max-bytes", "2MiB", "--checkpoint-interval-ms", "50"]


def test_replica_behind_trimmed_log_gets_one_full_resync(make_cluster):
    cluster = make_cluster(size=3, extra_args=SMALL_LOG)
    cluster.start_all()
    cluster.client(0).set("first", "1")
    cluster.wait_converged()
    full_before, _ = resync_counters(cluster, 2)
    assert cluster.stop(2) == 0
    replica_offset = cluster.state([1])[1][1]

    master = cluster.client(0)
    value = "v" * 200
    for start in range(0, 20000, 1000):
        pipe = master.pipeline(transaction=False)
        for i in range(start, start + 1000):
            pipe.set(f"k{i}", value)
        pipe.execute()
    cluster.wait_until(
        lambda: int(cluster.info(0)["repl_backlog_first_byte_offset"]) > replica_offset + 1,
        20, "the master to trim its log past the stopped replica")

    cluster.start(2)
    digest = cluster.wait_converged(timeout=30)
    assert cluster.client(2).get("k19999") == value.encode()
    full, _ = resync_counters(cluster, 2)
    assert full == full_before + 1, f"kvstore-2: {full - full_before} full resyncs, expected 1"
    # No loop: it stays attached, converged, and does not copy everything again.
    time.sleep(2.0)
    assert resync_counters(cluster, 2)[0] == full_before + 1, "full resync loop"
    assert cluster.info(2)["master_link_status"] == "up"
    assert "kvstore_link_error" not in cluster.info(2), cluster.info(2)
    master.set("later", "1")
    assert cluster.wait_converged() != digest
    assert resync_counters(cluster, 2)[0] == full_before + 1


def fill(cluster, n, count, prefix="k", value="v" * 200):
    client = cluster.client(n)
    for start in range(0, count, 1000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(count, start + 1000)):
            pipe.set(f"{prefix}{i}", value)
        pipe.execute()


def wait_trimmed(cluster, past_seq):
    cluster.wait_until(
        lambda: int(cluster.info(0)["repl_backlog_first_byte_offset"]) > past_seq + 1, 20,
        f"the master to trim its log past seq {past_seq}")


def test_scale_out_past_the_trimmed_log_gets_a_full_resync_under_writes(make_cluster):
    cluster = make_cluster(size=3, extra_args=SMALL_LOG)
    cluster.start_all()
    fill(cluster, 0, 20000)
    wait_trimmed(cluster, 0)
    stop, writers = start_writers(cluster, 2, port=cluster.port(0))
    time.sleep(0.3)
    cluster.add_pod()
    time.sleep(1.0)  # the snapshot is taken and sent while writes go on
    acked = join_writers(stop, writers)
    assert all(not w.errors for w in writers), [w.errors for w in writers]
    digest = cluster.wait_converged(timeout=30)
    assert cluster.digest(3) == digest
    assert resync_counters(cluster, 3) == (1, 0)
    assert not missing_writes(cluster.client(3), acked)


def test_replica_killed_during_a_full_resync_starts_over_and_converges(make_cluster):
    cluster = make_cluster(size=3, extra_args=SMALL_LOG)
    cluster.start_all()
    cluster.wait_converged()
    assert cluster.stop(2) == 0
    fill(cluster, 0, 40000)
    wait_trimmed(cluster, cluster.offset(1) // 2)
    cluster.start(2)
    cluster.wait_until(lambda: cluster.info(2)["master_sync_in_progress"] == "1", 10,
                       "kvstore-2 to begin its full resync", interval=0.005)
    cluster.kill(2)
    # On a busy machine the whole copy (8 MB) can be installed before the kill lands: then the
    # restarted pod rightly continues from it (partially); otherwise it must start over. The
    # kill can also land between the install's commit and its log restart, which the restarted
    # pod finishes (and says so).
    installed = "full resync done" in cluster.pods[2].logs()
    cluster.start(2)  # logs the finishing at its start, before it answers PING
    installed = installed or "finishing an interrupted snapshot install" in cluster.pods[2].logs()
    digest = cluster.wait_converged(timeout=30)
    assert cluster.digest(2) == digest
    if installed:
        assert resync_counters(cluster, 2) == (0, 1)
    else:
        assert resync_counters(cluster, 2)[0] == 1


def test_master_killed_during_a_full_resync_leaves_the_replica_data_intact(make_cluster):
    cluster = make_cluster(size=3, extra_args=SMALL_LOG)
    cluster.start_all()
    fill(cluster, 0, 50, prefix="a")
    before = cluster.wait_converged()
    assert cluster.stop(2) == 0
    fill(cluster, 0, 60000)
    wait_trimmed(cluster, cluster.offset(1) // 2)
    cluster.start(2)
    cluster.wait_until(lambda: cluster.info(2)["master_sync_in_progress"] == "1", 10,
                       "kvstore-2 to begin its full resync", interval=0.005)
    cluster.kill(0)
    cluster.wait_until(lambda: cluster.info(2)["master_sync_in_progress"] == "0", 10,
                       "kvstore-2 to give up the interrupted full resync")
    state = cluster.digest(2)
    print("interrupted full resync:", resync_counters(cluster, 2), state, before)
    if resync_counters(cluster, 2)[0] == 0:
        assert state == before, "an interrupted full resync changed the replica's data"
    cluster.start(0)
    digest = cluster.wait_converged(timeout=30)
    assert cluster.digest(2) == digest
    assert cluster.client(2).get("k59999") == b"v" * 200


def test_a_full_resync_after_an_online_restore_sends_the_restored_key_space(make_cluster,
                                                                             tmp_path):
    # The master shares a full-resync snapshot with replicas that ask within 30 s. One taken
    # before a restore is of a key space the master no longer has: sent to a replica, it left
    # the replica online, acknowledging writes it never got (WAIT counted it).
    cluster = make_cluster(size=3, extra_args=SMALL_LOG)
    cluster.start_all()
    cluster.client(0).set("before", "backup")
    cluster.wait_converged()
    backup = str(tmp_path / "b.kvbackup")
    result = cluster.pods[0].kvctl("backup", "--out", backup)
    assert result.returncode == 0, result.stderr.decode()
    assert cluster.stop(2) == 0
    fill(cluster, 0, 20000)
    wait_trimmed(cluster, 2)
    cluster.start(2)  # a full resync: the master writes (and keeps) a snapshot
    cluster.wait_converged(timeout=30)
    assert resync_counters(cluster, 2)[0] == 1

    result = cluster.pods[0].kvctl("restore", backup, "--force")
    assert result.returncode == 0, result.stderr.decode()
    restored = cluster.digest(0)
    cluster.wait_until(lambda: all(cluster.digest(n) == restored for n in (1, 2)), 30,
                       "the replicas to resync to the restored key space")
    master = cluster.client(0)
    master.set("after", "restore")
    assert master.execute_command("WAIT", 2, 5000) == 2
    for n in (1, 2):
        assert cluster.client(n).get("after") == b"restore"
        assert cluster.client(n).get("k0") is None
        # The master's sequence went back with the restore: the replicas' idea of it too (it
        # stayed at the old maximum, a lag of 20,000 entries that kept /readyz failing).
        assert cluster.info(n)["kvstore_lag_entries"] == "0", cluster.info(n)


def start_a_long_full_resync_of_pod_2(cluster):
    """Returns once kvstore-2 has received a copy of about 60 MB and is installing it."""
    cluster.start_all()
    cluster.wait_converged()
    assert cluster.stop(2) == 0
    fill(cluster, 0, 30000, value="v" * 2000)  # about 60 MB: the install takes a while
    wait_trimmed(cluster, cluster.offset(1) // 2)
    cluster.wait_converged(pods=[0, 1], timeout=30)
    cluster.start(2)

    def installing():
        info = cluster.info(2)
        return (info["master_sync_in_progress"] == "1" and
                info.get("master_sync_left_bytes") == "0")
    cluster.wait_until(installing, 20, "kvstore-2 to receive the whole copy", interval=0.002)
    info = cluster.info(2)
    assert int(info["master_sync_total_bytes"]) > 50_000_000
    assert info["master_sync_perc"] == "100.00"


def assert_installed_cleanly(cluster, pod):
    log = cluster.pods[pod].logs()
    for failure in ("cannot install", "damaged", "does not follow this pod", "gap in the"):
        assert failure not in log, cluster.pods[pod].log_tail()
    # The role change landed during the install (the scenario), and the copy was kept.
    assert "waiting for the previous link to finish" in log, cluster.pods[pod].log_tail()
    assert log.index("waiting for the previous link") < log.index("full resync done")


def test_a_replica_re_pointed_while_installing_a_full_resync_finishes_it_first(make_cluster):
    # The old link's install went on after the re-point, while the new link already asked the
    # new master for a copy of its own: both used one incoming file, the old link deleted the new
    # one's, and an apply could land on top of the old install. Now the new link waits.
    cluster = make_cluster(size=3, extra_args=SMALL_LOG)
    start_a_long_full_resync_of_pod_2(cluster)
    cluster.set_master_ordinal(1)  # kvstore-1 promotes, and kvstore-2 re-points to it
    # While the new link waits, INFO still shows the install of the copy (it is the pod's sync
    # in progress), under the new master's address.
    samples = []

    def install_over():
        info = cluster.info(2)
        samples.append((info["master_port"], info["master_sync_in_progress"]))
        return "full resync done" in cluster.pods[2].logs()
    cluster.wait_until(install_over, 20, "kvstore-2 to finish installing", interval=0.002)
    new_master = str(cluster.port(1))
    under_new = [sync for port, sync in samples if port == new_master]
    # In progress until the copy is installed, then over: the new link resumes by partial resync.
    assert "1" in under_new and under_new == sorted(under_new, reverse=True), samples
    cluster.wait_until(lambda: cluster.role(1)[0] == "master", 20, "kvstore-1 to promote")
    cluster.client(1).set("after", "promotion")
    digest = cluster.wait_converged(timeout=30)
    assert cluster.digest(2) == digest
    assert cluster.client(2).get("k29999") == b"v" * 2000
    assert_installed_cleanly(cluster, 2)
    full, partial = resync_counters(cluster, 2)
    assert (full, partial) == (1, 1), (full, partial)


def test_a_replica_promoted_while_installing_a_full_resync_opens_its_epoch_after_it(make_cluster):
    # Promotion stops the link; the copy still being installed must land before the new epoch
    # and the writes it takes, never on top of them.
    cluster = make_cluster(size=3, extra_args=SMALL_LOG)
    start_a_long_full_resync_of_pod_2(cluster)
    cluster.set_master_ordinal(2)
    cluster.wait_until(lambda: cluster.role(2)[0] == "master", 20, "kvstore-2 to promote")
    cluster.client(2).set("after", "promotion")
    digest = cluster.wait_converged(timeout=30)
    assert cluster.client(2).get("after") == b"promotion"
    assert cluster.client(2).get("k29999") == b"v" * 2000
    assert cluster.client(0).get("after") == b"promotion"
    assert cluster.digest(0) == digest
    log = cluster.pods[2].logs()
    assert "full resync done" in log, cluster.pods[2].log_tail()
    assert log.index("full resync done") < log.rindex("epoch opened"), cluster.pods[2].log_tail()
