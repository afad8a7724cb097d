"""Backups end to end with the real binaries: `kvctl backup` (SNAPSHOT) while writes run,
`kvctl backup verify`, `kvctl restore` (RESTORE-SNAPSHOT) and `kvstore restore` (offline and
--if-empty). Key spaces are compared by DIGEST, and a backup's content is checked
against the exact state the source had at the snapshot's sequence.
"""
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

from conftest import KVCTL_BIN, clean_env, mounted_tmpfs, run_kvstore

PRELOAD = 3000


def kvctl(port, *args, env=None, timeout=120):
    return subprocess.run([KVCTL_BIN, "--port", str(port), *map(str, args)], capture_output=True,
                          timeout=timeout, env=clean_env(env))


def digest(server):
    return server.client().execute_command("DIGEST")


def fnv_digest(pairs):
    """DIGEST computed here: FNV-1a 64 over length-prefixed keys and values in key order."""
    if not pairs:
        return b"0" * 16
    h = 14695981039346656037
    for key, value in sorted(pairs.items()):
        for part in (key, value):
            for b in len(part).to_bytes(8, "little") + part:
                h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return b"%016x" % h


def preload(server, n=PRELOAD, prefix=b"pre:"):
    client = server.client()
    pipe = client.pipeline(transaction=False)
    expected = {}
    for i in range(n):
        key, value = prefix + b"%06d" % i, b"v%d-" % i + b"x" * (i % 50)
        pipe.set(key, value)
        expected[key] = value
    pipe.execute()
    return expected


def summary(result):
    """The key=value pairs of kvctl's one summary line."""
    return dict(re.findall(r"(\w+)=(\S+)", result.stdout.decode()))


def backup(server, out, *extra):
    result = kvctl(server.port, "backup", "--out", out, *extra)
    assert result.returncode == 0, result.stderr.decode()
    return summary(result)


def master_env(ordinal=0):
    # No wait for replicas on an empty data directory (the master starts alone here).
    return {"POD_NAME": f"kvstore-{ordinal}", "MASTER_ORDINAL": "0", "EMPTY_MASTER_WAIT_MS": "0"}


def replica_env(master, ordinal=1):
    return {"POD_NAME": f"kvstore-{ordinal}", "MASTER_ORDINAL": "0",
            "MASTER_ADDRESS": f"127.0.0.1:{master.port}"}


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_backup_during_writes_equals_the_source_at_its_sequence(make_server, tmp_path):
    source = make_server(env=master_env())
    expected = preload(source)
    start_seq = int(source.client().info("replication")["master_repl_offset"])
    stop = threading.Event()
    written = []

    def writer():
        # One new key per write, in order: the state at sequence start_seq + m is exactly the
        # preload plus w:0 .. w:m-1.
        client = source.client()
        i = 0
        while not stop.is_set():
            client.set(b"w:%08d" % i, b"value-%d" % i)
            written.append(i)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 200:
            time.sleep(0.01)
        info = backup(source, tmp_path / "b.kvbackup")
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    seq = int(info["seq"])
    m = seq - start_seq
    assert 0 < m < len(written), (seq, start_seq, len(written))
    for i in range(m):
        expected[b"w:%08d" % i] = b"value-%d" % i
    assert int(info["keys"]) == len(expected)
    assert info["pod"] == "kvstore-0"
    assert re.fullmatch(r"\d+:[0-9a-f]{16}", info["epoch"]), info

    verify = kvctl(source.port, "backup", "verify", tmp_path / "b.kvbackup")
    assert verify.returncode == 0, verify.stderr
    assert summary(verify)["seq"] == str(seq)

    target = make_server(env=master_env())
    result = kvctl(target.port, "restore", tmp_path / "b.kvbackup")
    assert result.returncode == 0, result.stderr.decode()
    assert summary(result)["keys"] == str(len(expected))
    assert digest(target) == fnv_digest(expected)
    assert target.client().dbsize() == len(expected)
    # The restored master takes writes, on a new epoch above the source's.
    assert target.client().set("after", "restore")
    assert int(target.client().info("replication")["kvstore_epoch"]) > int(info["epoch"].split(":")[0])


def test_backup_from_a_replica_and_replicas_resync_after_an_online_restore(make_server, tmp_path):
    master = make_server(env=master_env())
    preload(master, 500)
    replica = make_server(env=replica_env(master))
    wait_for(lambda: digest(replica) == digest(master), what="the replica to catch up")
    info = backup(replica, tmp_path / "r.kvbackup")
    assert info["pod"] == "kvstore-1"
    source_digest = digest(master)

    # The master moves on; then the backup is restored into it (FORCE), while its replica is
    # attached. The replica must not keep its newer data: it full-resyncs to the restored state.
    master.client().set("later", "write")
    master.client().delete(b"pre:000001")
    wait_for(lambda: digest(replica) == digest(master), what="the replica to follow")
    refused = kvctl(replica.port, "restore", tmp_path / "r.kvbackup", "--force")
    assert refused.returncode == 1
    assert b"replica" in refused.stderr
    result = kvctl(master.port, "restore", tmp_path / "r.kvbackup", "--force")
    assert result.returncode == 0, result.stderr.decode()
    assert digest(master) == source_digest
    wait_for(lambda: digest(replica) == source_digest, what="the replica to resync")
    master.client().set("next", "write")
    wait_for(lambda: digest(replica) == digest(master), what="the replica to stream again")


def test_restore_into_a_non_empty_master_is_refused_without_force(make_server, tmp_path):
    source = make_server()
    preload(source, 100)
    backup(source, tmp_path / "a.kvbackup")
    target = make_server()
    target.client().set("mine", "1")
    before = digest(target)
    result = kvctl(target.port, "restore", tmp_path / "a.kvbackup")
    assert result.returncode == 1
    assert b"holds 1 keys" in result.stderr and b"FORCE" in result.stderr, result.stderr
    assert digest(target) == before
    forced = kvctl(target.port, "restore", tmp_path / "a.kvbackup", "--force")
    assert forced.returncode == 0, forced.stderr
    assert digest(target) == digest(source)


def damaged_variants(good):
    data = good.read_bytes()
    header_end = data.index(b"\n\n") + 2
    flipped = bytearray(data)
    flipped[header_end + (len(data) - header_end) // 2] ^= 0x01
    trailer_flipped = bytearray(data)
    trailer_flipped[-1] ^= 0x01
    return {
        "truncated": (data[: len(data) // 2], b"truncated"),
        "no_trailer": (data[:-20], b"truncated"),
        "corrupted": (bytes(flipped), b"damaged"),
        "bad_checksum": (bytes(trailer_flipped), b"checksum mismatch"),
        "wrong_version": (data.replace(b"KVSTORE-BACKUP 1\n", b"KVSTORE-BACKUP 7\n", 1),
                          b"unsupported backup format version 7"),
        "not_a_backup": (b"hello world, this is not a backup\n", b"not a kvstore backup file"),
        "empty": (b"", b"empty"),
    }


def test_damaged_files_are_refused_and_the_target_is_unchanged(make_server, tmp_path):
    source = make_server()
    preload(source, 300)
    good = tmp_path / "good.kvbackup"
    backup(source, good)
    target = make_server()
    target.client().set("precious", "data")
    before = digest(target)
    for name, (data, message) in damaged_variants(good).items():
        path = tmp_path / f"{name}.kvbackup"
        path.write_bytes(data)
        verify = kvctl(target.port, "backup", "verify", path)
        assert verify.returncode == 1, name
        assert message in verify.stderr, (name, verify.stderr)
        restore = kvctl(target.port, "restore", path, "--force")
        assert restore.returncode == 1, name
        assert message in restore.stderr, (name, restore.stderr)
        assert digest(target) == before, name

    # Offline too: the data directory is left as it was.
    target.stop()
    for name, (data, message) in damaged_variants(good).items():
        result = run_kvstore(["restore", "--from", str(tmp_path / f"{name}.kvbackup"),
                              "--data-dir", str(target.data_dir), "--force"])
        assert result.returncode == 1, name
        assert message in result.stderr, (name, result.stderr)
    target.start()
    assert digest(target) == before


def test_a_lying_client_cannot_damage_the_server(make_server, tmp_path):
    """RESTORE-SNAPSHOT fed garbage, too many bytes, or cut off: refused, data unchanged."""
    from conftest import RespConn, RespError
    target = make_server()
    target.client().set("precious", "data")
    before = digest(target)
    cases = [
        (1000, b"$16\r\nnot a snapshot!!\r\n", "damaged"),
        (1000, b"*1\r\n$1\r\nx\r\n", "bulk strings"),
        (10, b"$20\r\n" + b"H" * 20 + b"\r\n", "longer than the announced 10 bytes"),
        (1000, b"$1000000000\r\n", None),  # announces more than a chunk may hold
        (1000, b"$3\r\nH\x00\x00\r\n", None),  # then the client goes away
    ]
    for announced, payload, message in cases:
        with RespConn(target.port) as conn:
            # The previous restore's connection may still be closing on the server.
            for _ in range(100):
                first = conn.call("RESTORE-SNAPSHOT", announced, "FORCE")
                if first != RespError("ERR another restore is running"):
                    break
                conn.close()
                time.sleep(0.05)
                conn = RespConn(target.port)
            assert first == "SEND"
            conn.send(payload)
            if message is not None:
                reply = conn.read_reply()
                assert "restore refused" in str(reply) and message in str(reply), reply
            elif announced == 1000 and payload.startswith(b"$1000000000"):
                assert "malformed" in str(conn.read_reply())
    assert digest(target) == before
    assert target.client().ping()


def test_offline_restore_and_if_empty(make_server, tmp_path):
    source = make_server(env=master_env())
    preload(source, 400)
    file = tmp_path / "dr.kvbackup"
    backup(source, file)
    source_digest = digest(source)

    # --if-empty: nothing to do without RESTORE_FROM, and on a replica.
    data = tmp_path / "restored"
    noop = run_kvstore(["restore", "--if-empty", "--data-dir", str(data)], env=master_env())
    assert noop.returncode == 0 and b"nothing to restore" in noop.stdout, noop
    replica = run_kvstore(["restore", "--if-empty", "--data-dir", str(data)],
                          env={**master_env(2), "RESTORE_FROM": str(file)})
    assert replica.returncode == 0 and b"replica" in replica.stdout, replica
    assert not (data / "db").exists()

    # The master ordinal on an empty volume restores.
    result = run_kvstore(["restore", "--if-empty", "--data-dir", str(data)],
                         env={**master_env(0), "RESTORE_FROM": str(file)})
    assert result.returncode == 0, result.stderr
    assert b"restored" in result.stdout
    # A second start (the pod restarted) leaves the restored, now live, data alone.
    again = run_kvstore(["restore", "--if-empty", "--data-dir", str(data)],
                        env={**master_env(0), "RESTORE_FROM": str(file)})
    assert again.returncode == 0 and b"already holds a store" in again.stdout, again

    restored = make_server(data_dir=data, env=master_env())
    assert digest(restored) == source_digest
    # Its replicas full-sync from it.
    follower = make_server(env=replica_env(restored))
    wait_for(lambda: digest(follower) == source_digest, what="the new replica to sync")

    # Offline into a non-empty directory: refused without --force.
    restored.stop()
    refused = run_kvstore(["restore", "--from", str(file), "--data-dir", str(data)])
    assert refused.returncode == 1 and b"--force" in refused.stderr, refused
    usage = run_kvstore(["restore", "--data-dir", str(data)])
    assert usage.returncode == 2
    # With --force, the pod's role records go too: they describe the replaced history (a pod
    # that was a replica would start as master by catching up with its old master, over the
    # restored data).
    records = data / "replication"
    records.mkdir(exist_ok=True)
    for name, text in (("last-role", "replica\n127.0.0.1:1\n"), ("fenced", "ordinal 1"),
                       ("replica-stopped-attached", "127.0.0.1:1\n5\n")):
        (records / name).write_text(text)
    forced = run_kvstore(["restore", "--from", str(file), "--data-dir", str(data), "--force"])
    assert forced.returncode == 0, forced
    assert not [p.name for p in records.iterdir() if not p.name.startswith("full-")
                and not p.name.endswith(".kvsnap")], list(records.iterdir())


def test_retention_keeps_exactly_n_files(make_server, tmp_path):
    server = make_server()
    preload(server, 50)
    out = tmp_path / "backups"
    out.mkdir()
    (out / "unrelated.txt").write_text("not a backup: never removed")
    made = []
    for i in range(5):
        server.client().set("round", str(i))
        made.append(Path(backup(server, out, "--keep", "3")["file"]).name)
        time.sleep(0.01)
    left = sorted(p.name for p in out.iterdir() if p.name.endswith(".kvbackup"))
    assert left == sorted(made)[-3:]
    assert (out / "unrelated.txt").exists()
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    usage = kvctl(server.port, "backup", "--out", tmp_path / "x.kvbackup", "--keep", "2")
    assert usage.returncode == 2


def test_backup_needs_auth_and_reports_unreachable(make_server, tmp_path):
    server = make_server(env={"KVSTORE_PASSWORD": "pw"})
    denied = kvctl(server.port, "backup", "--out", tmp_path / "x.kvbackup")
    assert denied.returncode == 1 and b"NOAUTH" in denied.stderr, denied
    ok = kvctl(server.port, "backup", "--out", tmp_path / "x.kvbackup", env={"KVSTORE_PASSWORD": "pw"})
    assert ok.returncode == 0, ok.stderr
    closed = kvctl(1, "backup", "--out", tmp_path / "y.kvbackup")
    assert closed.returncode == 3
    assert not (tmp_path / "y.kvbackup").exists()


# ---- Review findings: each test failed before its fix ----

def big_backup(make_server, path, values=6000, value_bytes=1000):
    """A backup of about values * value_bytes bytes, taken from a server made for it."""
    source = make_server()
    client = source.client()
    pipe = client.pipeline(transaction=False)
    for i in range(values):
        pipe.set(b"pre:%06d" % i, b"%06d" % i + b"x" * (value_bytes - 6))
        if i % 500 == 499:
            pipe.execute()
    pipe.execute()
    backup(source, path)
    source.stop()
    return path


def test_a_restore_without_force_never_wipes_an_acknowledged_write(make_server, tmp_path):
    """Writes start while a restore without --force runs into an empty master. Whatever the
    timing, the restore is refused or it ran before those writes: no acknowledged write may be
    missing afterwards. (The emptiness used to be checked before the install was queued, and a
    write that committed in between was wiped, acknowledged.)"""
    file = big_backup(make_server, tmp_path / "big.kvbackup")
    target = make_server(env=master_env())
    client = target.client()
    started = time.monotonic()
    assert kvctl(target.port, "restore", file).returncode == 0
    restore_seconds = time.monotonic() - started
    outcomes = []
    deadline = time.monotonic() + 90
    # Writes start after a delay. Too early, the restore is refused; late, they come after it.
    # The gap was in between, where the delay is bisected to: the latest delay seen refused
    # and the earliest seen completed close in on it.
    refused_at, completed_at = 0.0, restore_seconds
    for attempt in range(24):
        if time.monotonic() > deadline:
            break
        client.flushall()
        delay = (refused_at + completed_at) / 2
        acked, stop = [], threading.Event()

        def writer():
            conn = target.client()
            time.sleep(delay)
            for i in range(20000):
                if stop.is_set():
                    break
                key = b"w:%02d:%06d" % (attempt, i)
                try:
                    if conn.set(key, b"v"):
                        acked.append(key)
                except redis.ResponseError:
                    pass  # refused writes (while the new epoch opens) are not acknowledged

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            result = kvctl(target.port, "restore", file)
            time.sleep(0.05)
        finally:
            stop.set()
            thread.join()
        assert result.returncode in (0, 1), result.stderr.decode()
        outcomes.append(result.returncode)
        missing = [key for key in acked if not client.exists(key)]
        assert not missing, (f"attempt {attempt} (writes from {delay * 1000:.1f} ms, restore exit "
                             f"{result.returncode}): {len(missing)} of {len(acked)} acknowledged "
                             f"writes are gone, e.g. {missing[:3]}; {result.stderr.decode()}")
        if result.returncode == 0:
            completed_at = delay
        else:
            refused_at = delay
        if completed_at - refused_at < 0.0005:  # closed in: start over, timings drift
            refused_at, completed_at = 0.0, restore_seconds
    # Both sides of the gap were reached (else the timing above did not test it).
    assert len(outcomes) >= 8 and 0 in outcomes and 1 in outcomes, outcomes


def test_a_backup_leaves_no_copy_of_the_key_space_on_the_data_volume(make_server, tmp_path):
    """The server writes each backup's snapshot to <data_dir>/backup before it streams it: a full
    copy of the key space, which stayed there until the next backup (a day), on a volume sized
    for the map and the log only."""
    server = make_server(env=master_env())
    preload(server, 300)
    backup(server, tmp_path / "b1.kvbackup")
    leftovers = list((server.data_dir / "backup").glob("full-*"))
    assert not leftovers, leftovers


def test_a_backup_right_after_another_holds_the_writes_between(make_server, tmp_path):
    """A second backup within seconds of the first used to get the first's snapshot file."""
    from conftest import RespConn
    server = make_server(env=master_env())
    preload(server, 200)
    first = backup(server, tmp_path / "b1.kvbackup")
    server.client().set("between", "the backups")
    server.client().delete(b"pre:000007")
    second = backup(server, tmp_path / "b2.kvbackup")
    assert int(second["seq"]) == int(first["seq"]) + 2, (first, second)
    assert int(second["keys"]) == int(first["keys"])
    expected_digest = digest(server)
    target = make_server(env=master_env())
    restored = kvctl(target.port, "restore", tmp_path / "b2.kvbackup")
    assert restored.returncode == 0, restored.stderr.decode()
    assert digest(target) == expected_digest
    assert target.client().get("between") == b"the backups"

    # Asked again with nothing written since, the server may share the file, and the reply
    # says when its snapshot was taken (a backup header's `created`).
    with RespConn(server.port) as conn:
        reply = conn.call("SNAPSHOT")
    fields = reply.split()
    assert fields[0] == "SNAPSHOT" and fields[3] == second["seq"], reply
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", fields[6]), reply
    taken = time.mktime(time.strptime(fields[6], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert abs(taken - time.time()) < 60, reply


@pytest.fixture
def tmpfs_80m(tmp_path):
    """A small filesystem to run out of (root only)."""
    with mounted_tmpfs(tmp_path / "tmpfs", "80m") as mount_point:
        yield mount_point


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def leave_free(mount_point, nbytes):
    """Fills the filesystem with a file until about nbytes are left."""
    with open(mount_point / "filler", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, free_bytes(mount_point) - nbytes)


def server_on(make_server, mount_point):
    """A master whose data directory is on mount_point (its log file is not): a 32 MiB map and
    1 MiB log segments, so that it fits an 80 MiB filesystem with room to spare."""
    server = make_server(data_dir=mount_point / "data", env=master_env(),
                         args=["--max-map-bytes", "32mb", "--log-segment-bytes", "1mb"],
                         start=False)
    server.log_path = mount_point.parent / f"kvstore-{server.port}.log"
    return server.start()


def test_a_backup_that_runs_out_of_disk_leaves_no_file_behind(make_server, tmpfs_80m, tmp_path):
    server = server_on(make_server, tmpfs_80m)
    client = server.client()
    pipe = client.pipeline(transaction=False)
    for i in range(2000):  # about 8 MiB: the snapshot needs that much room
        pipe.set(b"k:%05d" % i, os.urandom(4096))
    pipe.execute()
    leave_free(tmpfs_80m, 4 << 20)
    before = free_bytes(tmpfs_80m)
    result = kvctl(server.port, "backup", "--out", tmp_path / "b.kvbackup")
    assert result.returncode == 1, (result.returncode, result.stderr.decode())
    left = sorted(p.name for p in (tmpfs_80m / "data" / "backup").iterdir())
    assert left == [], f"the failed backup left {left} on the data volume"
    assert free_bytes(tmpfs_80m) >= before - (1 << 20), (free_bytes(tmpfs_80m), before)
    # The pod's own writes still have the room they had (2 MiB: new log segments).
    for i in range(500):
        assert client.set(b"after:%04d" % i, os.urandom(4096)), i
    assert client.dbsize() == 2500
    assert b"No space left" in result.stderr, result.stderr.decode()


def test_a_restore_refused_part_way_reports_the_servers_error(make_server, tmpfs_80m, tmp_path):
    """A restore that runs out of disk on the server: kvctl still gets the server's reason,
    not a reset connection (the server used to close with the client's data unread)."""
    from conftest import RespConn
    file = big_backup(make_server, tmp_path / "big.kvbackup", values=24, value_bytes=1 << 20)
    server = server_on(make_server, tmpfs_80m)
    leave_free(tmpfs_80m, 6 << 20)
    result = kvctl(server.port, "restore", file)
    stderr = result.stderr.decode()
    assert result.returncode == 1, (result.returncode, stderr)
    assert "restore refused, nothing changed" in stderr and "disk full" in stderr, stderr
    assert not (tmpfs_80m / "data" / "replication" / "restore.kvsnap").exists()

    # The same with a client that reads only once it has sent everything (kvctl may cope
    # with a reset by itself): the server's reply must still reach it.
    data = file.read_bytes()
    snapshot = data[data.index(b"\n\n") + 2:-20]
    with RespConn(server.port, timeout=30) as conn:
        assert conn.call("RESTORE-SNAPSHOT", len(snapshot)) == "SEND"
        try:
            for start in range(0, len(snapshot), 1 << 20):
                chunk = snapshot[start:start + (1 << 20)]
                conn.send(b"$%d\r\n%s\r\n" % (len(chunk), chunk))
            reply = conn.read_reply()
        except OSError as e:
            pytest.fail(f"the server reset the connection instead of replying: {e!r}")
        # The server drains this refused client for a while; a retry meanwhile is served (it
        # got "another restore is running" for those 2 s).
        with RespConn(server.port, timeout=30) as retry:
            assert retry.call("RESTORE-SNAPSHOT", len(snapshot)) == "SEND"
    assert "restore refused, nothing changed" in str(reply) and "disk full" in str(reply), reply
    assert server.client().dbsize() == 0
    assert server.client().set("still", "writable")


def test_a_restore_killed_part_way_leaves_no_partial_file(make_server, tmp_path):
    from conftest import RespConn
    file = big_backup(make_server, tmp_path / "big.kvbackup", values=3000)
    data = file.read_bytes()
    snapshot = data[data.index(b"\n\n") + 2:-20]
    server = make_server(env=master_env())
    partial = server.data_dir / "replication" / "restore.kvsnap"
    with RespConn(server.port) as conn:
        assert conn.call("RESTORE-SNAPSHOT", len(snapshot)) == "SEND"
        half = snapshot[: len(snapshot) // 2]
        conn.send(b"$%d\r\n%s\r\n" % (len(half), half))
        wait_for(lambda: partial.exists() and partial.stat().st_size > 0, timeout=10,
                 what="the restore to store part of the snapshot")
        server.kill9()
    server.start()
    assert not partial.exists(), "a killed restore's partial snapshot survived the restart"
    assert server.client().dbsize() == 0


def test_a_replica_its_master_has_not_confirmed_is_not_backed_up(make_server, tmp_path):
    """A replica that holds no data, or data its master has not confirmed since it started, is
    refused (exit 1, with the reason), so that `--keep` never removes good backups for its copy.
    One whose link went down after it attached serves stale but confirmed data: backed up."""
    master = make_server(env=master_env())
    preload(master, 200)
    replica = make_server(env=replica_env(master))
    wait_for(lambda: digest(replica) == digest(master), what="the replica to catch up")
    out = tmp_path / "backups"
    out.mkdir()
    good = []
    for _ in range(2):
        good.append(Path(backup(master, out, "--keep", "2")["file"]).name)
        time.sleep(0.01)  # file names carry milliseconds

    master.kill9()
    wait_for(lambda: replica.client().info("replication")["master_link_status"] == "down",
             timeout=10, what="the replica to see its master gone")
    stale = backup(replica, tmp_path / "stale.kvbackup")
    assert stale["pod"] == "kvstore-1" and stale["keys"] == "200", stale

    # Killed and restarted while its master is away: not attached since start.
    replica.kill9()
    replica.start()
    # A new replica: no data at all.
    newcomer = make_server(env=replica_env(master, ordinal=2))
    for server, why in ((replica, b"not attached since start"), (newcomer, b"no data yet")):
        refused = kvctl(server.port, "backup", "--out", out, "--keep", "2")
        assert refused.returncode == 1, (refused.stdout, refused.stderr)
        assert b"backup refused" in refused.stderr and why in refused.stderr, refused.stderr
        assert b"back up the master or a ready replica" in refused.stderr, refused.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(good)


def test_a_restore_cut_inside_a_frame_is_refused_at_once(make_server, tmp_path):
    """A client that announces exactly the bytes it sends, but whose snapshot ends inside a
    frame, gets the refusal at once: before, the server waited 60 s for more, holding the
    restore slot, then closed without a reply."""
    from conftest import RespConn
    source = make_server()
    preload(source, 2000)
    good = tmp_path / "good.kvbackup"
    backup(source, good)
    data = good.read_bytes()
    snapshot = data[data.index(b"\n\n") + 2:-20]
    cut = snapshot[: len(snapshot) // 2]
    target = make_server(env=master_env())
    target.client().set("precious", "data")
    before = digest(target)
    with RespConn(target.port, timeout=10) as conn:
        assert conn.call("RESTORE-SNAPSHOT", len(cut), "FORCE") == "SEND"
        conn.send(b"$%d\r\n%s\r\n" % (len(cut), cut))
        reply = str(conn.read_reply())
    assert "restore refused, nothing changed: the snapshot is truncated" in reply, reply
    with RespConn(target.port, timeout=10) as conn:
        assert conn.call("RESTORE-SNAPSHOT", 10, "FORCE") == "SEND", "the restore slot is held"
    assert digest(target) == before
