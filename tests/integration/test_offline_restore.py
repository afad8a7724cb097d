"""`kvstore restore` (offline, e.g. by hand on a mounted volume) when the restore does not finish:
a restore that fails, or is killed, into an empty data directory must not leave a store behind
that the next `--if-empty` run takes for live data (the master would then start empty), nor one
that a server starts on."""
import os
import signal
import subprocess
import time

from conftest import KVCTL_BIN, KVSTORE_BIN, clean_env, free_port, run_kvstore

MASTER = {"POD_NAME": "kvstore-0", "MASTER_ORDINAL": "0", "EMPTY_MASTER_WAIT_MS": "0"}


def make_backup(make_server, path, keys, value_bytes):
    source = make_server(env=MASTER)
    client = source.client()
    pipe = client.pipeline(transaction=False)
    for i in range(keys):
        pipe.set(b"key:%07d" % i, b"%07d" % i + b"x" * value_bytes)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    result = subprocess.run([KVCTL_BIN, "--port", str(source.port), "backup", "--out", str(path)],
                            capture_output=True, timeout=120, env=clean_env())
    assert result.returncode == 0, result.stderr
    digest = client.execute_command("DIGEST")
    source.stop()
    return digest


def init_container(data, file, *extra):
    return run_kvstore(["restore", "--if-empty", "--data-dir", str(data), *extra],
                       env={**MASTER, "RESTORE_FROM": str(file)}, timeout=120)


def test_a_failed_restore_leaves_no_store_and_the_next_run_restores(make_server, tmp_path):
    file = tmp_path / "b.kvbackup"
    digest = make_backup(make_server, file, 4000, 1000)  # about 4 MB
    data = tmp_path / "volume"
    failed = init_container(data, file, "--max-map-bytes", "2MiB")
    assert failed.returncode == 1, failed
    assert b"nothing changed" in failed.stderr, failed.stderr
    assert not (data / "db").exists() and not (data / "log").exists()
    # The same restore runs again (here with room enough): it restores.
    again = init_container(data, file)
    assert again.returncode == 0 and b"restored" in again.stdout, again
    restored = make_server(data_dir=data, env=MASTER)
    assert restored.client().execute_command("DIGEST") == digest


def test_a_killed_restore_is_not_a_store(make_server, tmp_path):
    file = tmp_path / "b.kvbackup"
    digest = make_backup(make_server, file, 30000, 1000)  # about 30 MB: the install takes a while
    data = tmp_path / "volume"
    marker = data / "restore-in-progress"
    killed = False
    for _ in range(10):  # the kill must land while the install runs (a loaded machine may miss)
        proc = subprocess.Popen([KVSTORE_BIN, "restore", "--if-empty", "--data-dir", str(data)],
                                env=clean_env({**MASTER, "RESTORE_FROM": str(file)}),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        if proc.poll() is None and marker.exists() and (data / "db").exists():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            killed = True
            break
        proc.wait(timeout=60)
        subprocess.run(["rm", "-rf", str(data)], check=True)
    assert killed, "the restore always finished before it could be killed"

    # A server does not start on the partial store.
    refused = run_kvstore(["--bind", "127.0.0.1", "--port", str(free_port()), "--admin-port", "0",
                           "--data-dir", str(data)], env=MASTER, timeout=30)
    assert refused.returncode == 1, refused
    assert b"offline restore" in refused.stderr and b"did not finish" in refused.stderr, refused
    # The next run restores from scratch.
    again = init_container(data, file)
    assert again.returncode == 0, again
    assert b"interrupted restore" in again.stdout and b"restored" in again.stdout, again.stdout
    assert not marker.exists()
    restored = make_server(data_dir=data, env=MASTER)
    assert restored.client().execute_command("DIGEST") == digest


def test_snapshot_files_left_by_killed_processes_are_removed_at_start(make_server, tmp_path):
    # An offline restore killed while it extracted its file, a replica killed during a full
    # resync: their half-written snapshots would sit on the volume until the next such run.
    data = tmp_path / "volume"
    (data / "replication").mkdir(parents=True)
    leftovers = [data / "restore-in-progress.kvsnap", data / "replication" / "incoming.kvsnap"]
    for path in leftovers:
        path.write_bytes(b"half a snapshot" * 1000)
    server = make_server(data_dir=data, env=MASTER)
    assert server.client().ping()
    assert [path for path in leftovers if path.exists()] == []
