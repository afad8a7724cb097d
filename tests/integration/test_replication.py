"""Replication basics on a local three-pod StatefulSet look-alike (cluster.py): what replicas see
and refuse, ROLE / INFO / DIGEST on both sides, WAIT, sync mode and min_replicas_to_write, a
graceful SIGTERM of the master, a sync write replaced by a restore, a password, and the role
settings (exit code 2, `kvstore role`). The failure scenarios are in test_replication_failover.py
and test_replication_recovery.py."""
import os
import signal
import subprocess
import threading
import time

from cluster import join_writers, missing_writes, start_writers
from conftest import KVCTL_BIN, RespConn, RespError, keyspace_digest, run_kvstore

ZERO_DIGEST = "0" * 16


def test_writes_reach_replicas_and_replicas_refuse_writes(make_cluster):
    cluster = make_cluster(size=3)
    cluster.start_all()
    master = cluster.client(0)
    for i in range(200):
        master.set(f"k{i}", f"v{i}")
    master.mset({f"m{i}": b"\x00\xffbin" * i for i in range(20)})
    master.delete("k7")
    digest = cluster.wait_converged()
    assert digest != ZERO_DIGEST
    rendered = {n: keyspace_digest(cluster.client(n)) for n in range(3)}
    assert len(set(rendered.values())) == 1, rendered
    assert rendered[0].startswith("219 keys"), rendered[0]
    for n in (1, 2):
        replica = cluster.client(n)
        assert replica.get("k199") == b"v199"
        assert replica.get("k7") is None
        assert replica.get("m19") == b"\x00\xffbin" * 19
        with RespConn(cluster.port(n)) as conn:
            for command in (("SET", "k1", "x"), ("DEL", "k1"), ("INCR", "c"),
                            ("MSET", "a", "1", "b", "2")):
                assert conn.call(*command) == RespError(
                    "READONLY You can't write against a read only replica."), command
        assert replica.get("k1") == b"v1"
        assert replica.exists("c", "a", "b") == 0
    assert cluster.digest(1) == digest, "a refused write changed a replica"


def test_role_and_info_on_master_and_replicas(make_cluster):
    cluster = make_cluster(size=3)
    cluster.start_all()
    cluster.client(0).set("x", "1")
    cluster.wait_converged()
    seq = cluster.offset(0)
    assert seq >= 2, "an epoch entry and one write"

    # A replica acknowledges once its own fsync ran, up to replica_sync_delay_ms (10 ms) after
    # it applied the entries.
    def acks():
        role = cluster.role(0)
        assert role[0] == "master" and role[1] == seq, role
        return sorted((ip.decode(), int(port), int(acked)) for ip, port, acked in role[2])
    expected = [("127.0.0.1", cluster.port(1), seq), ("127.0.0.1", cluster.port(2), seq)]
    cluster.wait_until(lambda: acks() == expected, 5, "both replicas to acknowledge")

    info = cluster.info(0)
    assert info["role"] == "master"
    assert info["connected_slaves"] == "2"
    slaves = sorted((info[f"slave{i}"]["port"], info[f"slave{i}"]["state"],
                     info[f"slave{i}"]["offset"]) for i in range(2))
    assert slaves == [(str(cluster.port(1)), "online", str(seq)),
                      (str(cluster.port(2)), "online", str(seq))], info
    assert info["master_repl_offset"] == str(seq)
    # As Redis: the configured size (repl_backlog_bytes, default 1 GiB), then what is held.
    assert info["repl_backlog_size"] == str(1 << 30), info
    assert 0 < int(info["repl_backlog_histlen"]) < 1 << 20, info
    assert info["kvstore_replication_mode"] == "async"
    epoch = info["kvstore_epoch"]
    assert int(epoch) >= 1

    for n in (1, 2):
        assert cluster.role(n) == ["slave", "127.0.0.1", cluster.port(0), "connected", seq]
        info = cluster.info(n)
        expected = {"role": "slave", "master_host": "127.0.0.1",
                    "master_port": str(cluster.port(0)), "master_link_status": "up",
                    "master_sync_in_progress": "0", "master_repl_offset": str(seq),
                    "kvstore_epoch": epoch, "kvstore_master_seq": str(seq),
                    "kvstore_lag_entries": "0", "kvstore_full_resyncs": "0",
                    "kvstore_replication_mode": "async"}
        assert {k: info.get(k) for k in expected} == expected
        assert int(info["master_last_io_seconds_ago"]) <= 2
        assert int(info["kvstore_partial_resyncs"]) == 1, "an empty replica attaches from seq 0"
        assert "kvstore_link_error" not in info, info
    with RespConn(cluster.port(1)) as conn:
        assert conn.call("WAIT", "1", "10") == RespError(
            "ERR WAIT cannot be used with replica instances.")
    # HELLO's role is "replica" where ROLE and INFO say "slave", as in Redis.
    for n, role in ((0, b"master"), (1, b"replica")):
        with RespConn(cluster.port(n)) as conn:
            hello = conn.call("HELLO", "2")
            assert dict(zip(hello[::2], hello[1::2]))[b"role"] == role, hello
    assert len({cluster.digest(n) for n in range(3)}) == 1


def test_wait_counts_acknowledging_replicas(make_cluster):
    cluster = make_cluster(size=3)
    cluster.start_all()
    cluster.wait_converged()
    with RespConn(cluster.port(0)) as conn:
        assert conn.call("SET", "a", "1") == "OK"
        started = time.monotonic()
        assert conn.call("WAIT", "2", "1000") == 2
        assert time.monotonic() - started < 0.9, "WAIT should return as soon as both acked"

    assert cluster.stop(2) == 0
    cluster.wait_until(lambda: cluster.info(0)["connected_slaves"] == "1", 10,
                       "the master to drop the stopped replica")
    with RespConn(cluster.port(0)) as conn:
        assert conn.call("SET", "b", "2") == "OK"
        started = time.monotonic()
        assert conn.call("WAIT", "2", "300") == 1
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 2.0, f"WAIT 2 300 returned after {elapsed:.2f} s"
        assert conn.call("WAIT", "1", "0") == 1, "already satisfied: no wait"


def test_wait_and_sync_mode_do_not_wait_for_the_replicas_sync_delay(make_cluster):
    # Replicas that would otherwise fsync (and acknowledge) only a second after applying: the
    # master's acknowledgement request makes them sync at once for WAIT and for sync mode.
    for mode in ("async", "sync"):
        cluster = make_cluster(size=3, extra_args=["--replica-sync-delay-ms", "1000",
                                                   "--replication-mode", mode,
                                                   "--sync-timeout-ms", "5000"])
        cluster.start_all()
        cluster.wait_converged()
        with RespConn(cluster.port(0)) as conn:
            for i in range(5):
                started = time.monotonic()
                assert conn.call("SET", f"{mode}{i}", "v") == "OK"
                assert conn.call("WAIT", "2", "5000") == 2
                elapsed = time.monotonic() - started
                assert elapsed < 0.7, f"{mode}: SET + WAIT took {elapsed:.2f} s"
        cluster.wait_converged()
        for n in range(3):
            assert cluster.stop(n) == 0


def test_sync_mode_without_replicas_answers_noreplicas_and_keeps_the_write(make_cluster):
    cluster = make_cluster(size=2, extra_args=["--replication-mode", "sync",
                                               "--sync-replicas", "1",
                                               "--sync-timeout-ms", "300"])
    cluster.start(0)
    with RespConn(cluster.port(0)) as conn:
        started = time.monotonic()
        reply = conn.call("SET", "k", "v")
        elapsed = time.monotonic() - started
        assert isinstance(reply, RespError) and str(reply).startswith("NOREPLICAS"), reply
        # No replica could acknowledge it: answered at once, not after sync_timeout_ms.
        assert "heard from" in str(reply) and elapsed < 0.25, (reply, elapsed)
        assert conn.call("GET", "k") == b"v", "the write stays on the master"
    assert cluster.info(0)["kvstore_replication_mode"] == "sync"
    # With a replica, the same write path answers OK, and the earlier write replicated too.
    cluster.start(1)
    cluster.wait_converged()
    with RespConn(cluster.port(0)) as conn:
        assert conn.call("SET", "k2", "v2") == "OK"
    assert cluster.client(1).mget("k", "k2") == [b"v", b"v2"], \
        "a sync write is acknowledged only once the replica has it"


def test_min_replicas_to_write(make_cluster):
    cluster = make_cluster(size=3, extra_args=["--min-replicas-to-write", "2"])
    cluster.start_all()
    cluster.wait_converged()
    assert cluster.call(0, "SET", "a", "1") == "OK"
    assert cluster.stop(2) == 0
    cluster.wait_until(lambda: cluster.info(0)["connected_slaves"] == "1", 10,
                       "the master to drop the stopped replica")
    reply = cluster.call(0, "SET", "b", "2")
    assert isinstance(reply, RespError) and str(reply).startswith("NOREPLICAS"), reply
    assert cluster.client(0).get("b") is None, "a refused write must not land"
    assert cluster.client(0).get("a") == b"1", "reads still work"
    cluster.start(2)
    cluster.wait_until(lambda: cluster.call(0, "SET", "b", "3") == "OK", 20,
                       "writes to be accepted again with two replicas")
    cluster.wait_converged()
    assert cluster.client(2).get("b") == b"3"


def test_sigterm_on_master_waits_for_replicas(make_cluster):
    cluster = make_cluster(size=3, extra_args=["--shutdown-replica-wait-ms", "10000"])
    cluster.start_all()
    cluster.wait_converged()
    stop, writers = start_writers(cluster, 2, port=cluster.port(0))
    time.sleep(0.3)
    # kvstore-2 freezes (SIGSTOP): its connection stays up but it acknowledges nothing.
    frozen = cluster.pods[2].proc
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        pipe = cluster.client(0).pipeline(transaction=False)
        for i in range(5000):
            pipe.set(f"burst{i}", "x" * 100)
        pipe.execute()
        final = cluster.offset(0)
        master = cluster.pods[0].proc
        master.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert master.poll() is None, "the master exited without waiting for kvstore-2"
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    code = cluster.stop(0)
    acked = join_writers(stop, writers)
    assert code == 0, f"the master exited {code} on SIGTERM"
    assert "every replica acknowledged the final sequence" in cluster.pods[0].logs()
    assert len(acked) > 10
    state = cluster.state([1, 2])
    assert state[1] == state[2], state
    for n in (1, 2):
        assert state[n][1] >= final, f"kvstore-{n} at {state[n][1]}, the master had {final}"
        missing = missing_writes(cluster.client(n), acked)
        assert not missing, f"kvstore-{n} lacks {len(missing)} acknowledged writes: " \
                            f"{sorted(missing.items())[:5]}"
        assert cluster.client(n).get("burst4999") == b"x" * 100


def test_sigterm_on_master_gives_up_waiting_after_shutdown_replica_wait_ms(make_cluster):
    cluster = make_cluster(size=2, extra_args=["--shutdown-replica-wait-ms", "800"])
    cluster.start_all()
    cluster.wait_converged()
    frozen = cluster.pods[1].proc
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        cluster.client(0).set("k", "v")
        started = time.monotonic()
        code = cluster.stop(0)
        elapsed = time.monotonic() - started
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    assert code == 0
    assert 0.7 <= elapsed < 5, f"stopped after {elapsed:.2f} s with a frozen replica"
    assert "replicas still behind after the wait" in cluster.pods[0].logs()


def test_password_protected_cluster_replicates(make_cluster):
    cluster = make_cluster(size=3, env={"KVSTORE_PASSWORD": "s3cret pass"})
    cluster.start_all()
    cluster.client(0).set("k", "v")
    digest = cluster.wait_converged()
    assert digest != ZERO_DIGEST
    for n in (1, 2):
        assert cluster.info(n)["master_link_status"] == "up"
        assert cluster.client(n).get("k") == b"v"
        with RespConn(cluster.port(n)) as conn:
            assert str(conn.call("GET", "k")) == "NOAUTH Authentication required."


def test_replica_with_a_wrong_password_reports_the_link_error(make_cluster):
    cluster = make_cluster(size=2, env={"KVSTORE_PASSWORD": "right"},
                           pod_args={1: ["--requirepass", "wrong"]})
    cluster.start(0)
    cluster.client(0).set("k", "v")
    cluster.start(1)
    replica = cluster.client(1, password="wrong")

    def link_error():
        info = parse_replica_info(replica)
        return info.get("master_link_status") == "down" and info.get("kvstore_link_error")

    error = cluster.wait_until(link_error, 10, "kvstore-1 to report why it cannot attach")
    assert "auth" in error.lower() or "pass" in error.lower(), error
    assert replica.get("k") is None


def parse_replica_info(client):
    return {k: str(v) for k, v in client.info("replication").items()}


# ---- role settings ----

def role_env(tmp_path, **env):
    return ["--config-dir", str(tmp_path / "configmap"), "--bind", "127.0.0.1",
            "--data-dir", str(tmp_path / "data"), "--admin-port", "0"], env


def assert_exit_2_naming(result, setting):
    stderr = result.stderr.decode(errors="replace")
    lines = stderr.splitlines()
    assert result.returncode == 2, f"exit code {result.returncode}, stderr:\n{stderr}"
    assert len(lines) == 1, f"expected one line on stderr:\n{stderr}"
    assert setting in lines[0], f"the line does not name {setting}: {lines[0]}"


def test_bad_role_settings_exit_2(tmp_path):
    (tmp_path / "configmap").mkdir()
    args, _ = role_env(tmp_path)
    cases = [({"POD_NAME": "kvstore-x"}, "pod_name"),
             ({"POD_NAME": "kvstore-0", "MASTER_ORDINAL": "-1"}, "master_ordinal"),
             ({"POD_NAME": "kvstore-0", "REPLICATION_MODE": "bogus"}, "replication_mode")]
    for env, setting in cases:
        assert_exit_2_naming(run_kvstore(args, env=env, timeout=10), setting)
    # The ConfigMap file layer is checked the same way.
    (tmp_path / "configmap" / "MASTER_ORDINAL").write_text("one\n")
    assert_exit_2_naming(run_kvstore(args, env={"POD_NAME": "kvstore-0"}, timeout=10),
                         "master_ordinal")


def test_role_subcommand_follows_the_configmap_file(tmp_path):
    configmap = tmp_path / "configmap"
    configmap.mkdir()
    args = ["--config-dir", str(configmap), "role"]
    env = {"MASTER_ORDINAL": "0", "MASTER_ADDRESS": "127.0.0.1:2345{ordinal}"}

    out = run_kvstore(args, env={**env, "POD_NAME": "kvstore-0"})
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "role: master" in text and "pod: kvstore-0" in text, text
    assert "MASTER_ORDINAL" in text, f"the reason is missing: {text}"

    (configmap / "MASTER_ORDINAL").write_text("1\n")  # overrides the environment
    out = run_kvstore(args, env={**env, "POD_NAME": "kvstore-0"})
    text = out.stdout.decode()
    assert out.returncode == 0, out.stderr
    assert "role: replica" in text and "master: 127.0.0.1:23451" in text, text
    assert "MASTER_ORDINAL 1" in text, text
    out = run_kvstore(args, env={**env, "POD_NAME": "kvstore-1"})
    assert "role: master" in out.stdout.decode(), out.stdout


def test_run_local_script_starts_a_replicating_cluster(tmp_path):
    """The README's run command (scripts/run-local.sh), with the binaries already built: a master
    and two replicas on 5550-5552; a put on the master is read from a replica; Ctrl-C stops all."""
    import os
    import signal
    import subprocess
    import time
    from pathlib import Path

    kvctl = os.environ["KVCTL_BIN"]
    build_dir = Path(os.environ["KVSTORE_BIN"]).parents[2]
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, KVSTORE_BUILD_DIR=str(build_dir), LOCAL_DATA=str(tmp_path / "data"))
    script = subprocess.Popen([str(repo / "scripts/run-local.sh")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        def run(*args):
            return subprocess.run([kvctl, *args], capture_output=True, timeout=10)

        deadline = time.monotonic() + 20
        while run("--port", "5550", "put", "hello", "world").returncode != 0:
            assert time.monotonic() < deadline, "the local master never took a write"
            time.sleep(0.1)
        for port in ("5551", "5552"):
            while True:
                read = run("--port", port, "read", "hello")
                if read.returncode == 0:
                    break
                assert time.monotonic() < deadline, f"replica on {port} never got the write"
                time.sleep(0.1)
            assert read.stdout.strip() == b"world"
        refused = run("--port", "5551", "put", "x", "1")
        assert refused.returncode == 1 and b"READONLY" in refused.stderr + refused.stdout
    finally:
        os.killpg(script.pid, signal.SIGINT)
        try:
            script.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(script.pid, signal.SIGKILL)
            script.wait()
    output = script.stdout.read().decode(errors="replace")
    assert "Starting as MASTER" in output and output.count("Starting as REPLICA of") == 2, output
    assert "shutdown: complete" in output, output


def test_a_sync_write_replaced_by_a_restore_is_not_acknowledged(make_cluster, make_server,
                                                                tmp_path):
    # A backup whose sequence numbers run far past the cluster's own.
    source = make_server()
    pipe = source.client().pipeline(transaction=False)
    for i in range(3000):
        pipe.set(f"restored{i}", i)
    pipe.execute()
    backup = tmp_path / "b.kvbackup"
    made = subprocess.run([KVCTL_BIN, "--port", str(source.port), "backup", "--out", str(backup)],
                          capture_output=True, timeout=60)
    assert made.returncode == 0, made.stderr

    cluster = make_cluster(size=2, extra_args=["--replication-mode", "sync",
                                               "--sync-timeout-ms", "20000"])
    cluster.start_all()
    cluster.wait_converged()
    replica = cluster.pods[1].proc
    os.kill(replica.pid, signal.SIGSTOP)  # the write waits for its acknowledgement
    replies = []
    with RespConn(cluster.port(0), timeout=30) as conn:
        waiting = threading.Thread(target=lambda: replies.append(conn.call("SET", "inflight", "x")))
        waiting.start()
        time.sleep(0.3)
        try:
            restored = subprocess.run([KVCTL_BIN, "--port", str(cluster.port(0)), "restore",
                                       str(backup), "--force"], capture_output=True, timeout=60)
        finally:
            os.kill(replica.pid, signal.SIGCONT)
        assert restored.returncode == 0, restored.stderr
        # Resynced to the restored data, the replica acknowledges sequence numbers above the
        # write's: they must not count for it.
        waiting.join(timeout=25)
        assert not waiting.is_alive()
    assert str(replies[0]).startswith("NOREPLICAS"), replies
    cluster.wait_converged()
    for n in (0, 1):
        assert cluster.client(n).get("inflight") is None
        assert cluster.client(n).get("restored2999") == b"2999"


def test_an_acknowledgement_beyond_what_was_sent_does_not_count(make_cluster):
    cluster = make_cluster(size=1, extra_args=["--replication-mode", "sync",
                                               "--sync-timeout-ms", "500"])
    cluster.start(0)
    with RespConn(cluster.port(0)) as fake:
        fake.send(b"REPLSYNC 5 27285 - 0\r\n")
        time.sleep(0.3)
        fake.send(b"REPLCONF ACK 1000000000\r\n")
        time.sleep(0.3)
        reply = cluster.call(0, "SET", "x", "1")
        assert str(reply).startswith("NOREPLICAS"), \
            f"a write acknowledged by a peer that never received it: {reply!r}"
        info = cluster.info(0)
        assert int(info["slave0"]["offset"]) <= int(info["master_repl_offset"]), info


def test_sync_mode_pipeline_without_replicas_is_answered_in_bounded_time(make_cluster):
    # Each batch the master reads from a pipeline used to wait sync_timeout_ms anew: 20 values of
    # 100 KB took 10 s with a 500 ms timeout, and more would outlast any client's timeout.
    cluster = make_cluster(size=2, extra_args=["--replication-mode", "sync",
                                               "--sync-timeout-ms", "500"])
    cluster.start_all()
    cluster.wait_converged()
    os.kill(cluster.pods[1].proc.pid, signal.SIGSTOP)
    try:
        client = cluster.client(0, socket_timeout=60)
        pipe = client.pipeline(transaction=False)
        for i in range(40):
            pipe.set(f"big{i}", b"v" * 100000)
        started = time.monotonic()
        replies = pipe.execute(raise_on_error=False)
        elapsed = time.monotonic() - started
        assert all("Not enough good replicas" in str(r) for r in replies), replies[:3]
        # The replica drops out of the count 2 s after its last acknowledgement (two
        # heartbeats); until then each batch waits 500 ms.
        assert elapsed < 5, f"40 refused writes took {elapsed:.1f} s"
        assert "heard from" in str(replies[-1]), replies[-1]
    finally:
        os.kill(cluster.pods[1].proc.pid, signal.SIGCONT)
    cluster.wait_converged()
    assert cluster.client(1).get("big39") == b"v" * 100000, "the writes replicate later"
