"""Running out of space: a full LMDB map (max_map_bytes) and a full filesystem (a small tmpfs).
Writes that do not fit fail with "-ERR storage full ...", nothing acknowledged is lost, reads keep
working, deletes succeed, and writes work again once space is free, also after a restart."""
import os
import random
import subprocess
import time

import pytest

from conftest import RespConn, RespError, mounted_tmpfs

VALUE_BYTES = 4096


def fill_until_full(conn, prefix, rng, limit=20000, seconds=90):
    """SETs 4 KiB values until one fails. Returns (acknowledged {key: value}, the error)."""
    acked = {}
    deadline = time.monotonic() + seconds
    for i in range(limit):
        assert time.monotonic() < deadline, f"not full after {i} writes in {seconds} s"
        key = f"{prefix}:{i:05d}".encode()
        value = rng.randbytes(VALUE_BYTES)
        reply = conn.call("SET", key, value)
        if reply == "OK":
            acked[key] = value
            continue
        assert isinstance(reply, RespError), f"SET {key!r}: unexpected reply {reply!r}"
        return acked, str(reply)
    pytest.fail(f"no 'storage full' error after {limit} writes of {VALUE_BYTES} bytes")


def assert_all_present(client, expected, what):
    keys = sorted(expected)
    wrong = []
    for start in range(0, len(keys), 200):
        chunk = keys[start:start + 200]
        for key, got in zip(chunk, client.mget(chunk)):
            if got != expected[key]:
                wrong.append(key)
    assert not wrong, f"{what}: {len(wrong)} of {len(keys)} acknowledged keys wrong, e.g. {wrong[:5]}"


def exercise_full_store(server, conn, client, acked, free_space=None):
    """The checks shared by both kinds of full: reads, deletes, writes again."""
    assert_all_present(client, acked, "while full")
    first = min(acked)
    assert client.get(first) == acked[first]
    assert client.dbsize() == len(acked)
    info = client.info("persistence")
    assert info.get("kvstore_writes_disabled") == 0, f"a full store must not poison writes: {info}"
    if free_space:
        free_space()
    doomed = sorted(acked)[::4]
    assert conn.call("DEL", *doomed) == len(doomed)
    for key in doomed:
        del acked[key]
    assert client.exists(*doomed) == 0
    failures = []  # reported by the caller after the restart checks, which must run anyway
    for i in range(5):
        key = f"after-full:{i}".encode()
        value = os.urandom(VALUE_BYTES)
        reply = conn.call("SET", key, value)
        if reply == "OK":
            acked[key] = value
        else:
            failures.append(f"SET {key.decode()} (4 KiB) after freeing space: {reply!r}")
    reply = conn.call("INCR", "after-full:counter")
    if reply == 1:
        acked[b"after-full:counter"] = b"1"
    else:
        failures.append(f"INCR after freeing space: {reply!r}")
    assert_all_present(client, acked, "after freeing space")
    return failures


def test_full_map(make_server):
    server = make_server(args=["--max-map-bytes", "2mb"])
    rng = random.Random(3)
    with RespConn(server.port) as conn:
        acked, error = fill_until_full(conn, "fill", rng)
        assert error.startswith("ERR storage full"), error
        assert len(acked) >= 50, f"a 2 MiB map held only {len(acked)} values of 4 KiB"
        # Still full: the next write fails the same way, and does not disturb the others.
        reply = conn.call("SET", b"one-more", rng.randbytes(VALUE_BYTES * 4))
        assert isinstance(reply, RespError) and str(reply).startswith("ERR storage full"), reply
        client = server.client()
        assert client.exists("one-more") == 0
        failures = exercise_full_store(server, conn, client, acked)
        client.close()
    assert server.stop() == 0
    # The operator learns it from the log too, once (a minute), not once per refused write.
    assert len([line for line in server.logs().splitlines()
                if "engine: storage full" in line]) == 1, server.logs()
    server.start()
    client = server.client()
    assert client.dbsize() == len(acked)
    assert_all_present(client, acked, "after restart")
    assert not failures, "writes did not work again after deleting a quarter of the keys:\n" + \
        "\n".join(failures)


@pytest.fixture
def small_tmpfs(tmp_path):
    with mounted_tmpfs(tmp_path / "tmpfs", "16m") as mount_point:
        yield mount_point


def server_on_small_disk(make_server, small_tmpfs):
    """A started server whose data directory is on the 16 MiB tmpfs, beside a 4 MiB file whose
    removal frees space. Returns (that file, the server)."""
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * (4 << 20))
    server = make_server(data_dir=small_tmpfs / "data", args=["--log-segment-bytes", "1mb"],
                         start=False)
    server.log_path = small_tmpfs.parent / f"kvstore-{server.port}.log"  # logs off the tmpfs
    server.start()
    return filler, server


def test_full_disk(make_server, small_tmpfs):
    filler, server = server_on_small_disk(make_server, small_tmpfs)
    rng = random.Random(4)
    try:
        with RespConn(server.port) as conn:
            acked, error = fill_until_full(conn, "disk", rng)
            assert len(acked) >= 50, f"a 16 MiB tmpfs held only {len(acked)} values of 4 KiB"
            assert server.proc.poll() is None, f"server died on a full disk:\n{server.logs()}"
            client = server.client()
            failures = exercise_full_store(server, conn, client, acked, free_space=filler.unlink)
            client.close()
        assert server.stop() == 0, server.logs()
        server.start()
        client = server.client()
        assert client.dbsize() == len(acked)
        assert_all_present(client, acked, "after restart")
        client.close()
        # Checked last so that a wrong text does not hide the recovery checks above.
        assert not failures, "writes did not work again after freeing space:\n" + \
            "\n".join(failures)
        assert error.startswith("ERR storage full"), f"a full disk must read as storage full: {error}"
    finally:
        if server.proc and server.proc.poll() is None:
            server.stop()


def test_a_restart_on_a_full_disk_serves_reads_and_writes_once_space_is_freed(make_server,
                                                                              small_tmpfs):
    """A pod restarted while its volume is full (a crash, a node drain) crash-looped: the data
    directory check took the full disk for a read-only one (exit 2, a bad setting), and a master
    could not open its start-up epoch (exit 1). Now it starts, serves reads, refuses writes
    with "storage full", and takes them once space is freed."""
    filler, server = server_on_small_disk(make_server, small_tmpfs)
    with RespConn(server.port) as conn:
        acked, error = fill_until_full(conn, "full", random.Random(7))
    assert "storage full" in error, error
    server.kill9()
    server.start()
    assert server.proc.poll() is None, server.logs()
    client = server.client()
    assert_all_present(client, acked, "after a restart on a full volume")
    with RespConn(server.port) as conn:
        reply = conn.call("SET", "new", "x" * VALUE_BYTES)
        assert isinstance(reply, RespError) and "storage full" in str(reply), reply
    assert "not writable" not in server.logs()
    filler.unlink()
    deadline = time.monotonic() + 10
    while True:
        try:
            if client.set("new", "x") is True:
                break
        except Exception as e:  # still refused
            assert "storage full" in str(e), e
        assert time.monotonic() < deadline, "writes did not resume after freeing space"
        time.sleep(0.2)
    assert_all_present(client, acked, "after freeing space")
    client.close()
    assert server.stop() == 0, server.logs()


def test_a_replica_on_a_full_disk_says_so_and_resumes_once_space_is_freed(make_cluster,
                                                                         tmp_path):
    cluster = make_cluster(size=2, extra_args=["--log-segment-bytes", "8MiB"])
    with mounted_tmpfs(cluster.pods[1].data_dir, "96m") as volume:
        cluster.start_all()
        cluster.wait_converged()
        master = cluster.client(0)
        value = os.urandom(50000)
        for start in range(0, 1500, 100):  # 150 MB: more than the replica's volume holds
            master.mset({f"big{i}": value for i in range(start, start + 100)})
        cluster.wait_until(lambda: "no space left" in cluster.info(1).get("kvstore_link_error", ""),
                           30, "the replica to report its full disk")
        time.sleep(3.0)  # the applies queued behind the failed one must not hide its cause
        info = cluster.info(1)
        assert "no space left" in info["kvstore_link_error"], info
        assert cluster.client(1).get("big0") == value, "reads go on"
        subprocess.run(["mount", "-o", "remount,size=1g", str(volume)], check=True, timeout=30)
        cluster.wait_converged(timeout=60)
        assert int(cluster.info(1)["kvstore_full_resyncs"]) == 0, "it resumed where it stopped"
