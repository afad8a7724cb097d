"""Start-up: bad settings stop the start with exit code 2 and one line naming the setting; the
layers (YAML < env < flags) decide the port; the role line; `kvstore role`; SIGTERM; JSON logs;
--version."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import KVSTORE_BIN, RespConn, RespError, clean_env, encode_command, free_port, run_kvstore


# A master started alone on an empty data directory opens its epoch at once (without this it
# waits empty_master_wait_ms for replicas: test_empty_master.py).
ALONE = {"EMPTY_MASTER_WAIT_MS": "0"}


def base_args(tmp_path, port=None):
    return ["--bind", "127.0.0.1", "--port", str(port or free_port()),
            "--data-dir", str(tmp_path / "data"), "--admin-port", "0"]


def assert_bad_setting(result, setting):
    stderr = result.stderr.decode(errors="replace")
    lines = stderr.splitlines()
    assert result.returncode == 2, f"exit code {result.returncode}, stderr:\n{stderr}"
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}:\n{stderr}"
    assert setting.lower() in lines[0].lower(), f"the line does not name {setting}: {lines[0]}"


BAD_FLAGS = {
    "port": ["--port", "abc"],
    "fsync": ["--fsync", "sometimes"],
    "max_clients": ["--max-clients", "0"],
    "max_map_bytes": ["--max-map-bytes", "12 parsecs"],
    "frame_timeout_ms": ["--frame-timeout-ms", "1.5"],
    "bind": ["--bind", "999.1.1.1"],  # was caught only at listen(): exit 1, an epoch opened
}


@pytest.mark.parametrize("setting", BAD_FLAGS.keys())
def test_bad_flag(tmp_path, setting):
    started = time.monotonic()
    args = base_args(tmp_path)
    if setting == "port":
        args = args[:2] + args[4:]  # no valid --port before the bad one
    if setting == "bind":
        args = args[2:]
    result = run_kvstore(args + BAD_FLAGS[setting], timeout=10)
    assert time.monotonic() - started < 5
    assert_bad_setting(result, setting)
    assert not (tmp_path / "data").exists(), "a bad setting must stop the start before the data"


BAD_ENV = {
    "fsync": {"FSYNC": "bad"},
    "port": {"PORT": "tcp://10.0.0.1:5555"},  # a Kubernetes service link
    "pod_name": {"POD_NAME": "kvstore"},  # set, but without an ordinal
    "master_ordinal": {"POD_NAME": "kvstore-0", "MASTER_ORDINAL": "-1"},
    "log_format": {"LOG_FORMAT": "xml"},
}


@pytest.mark.parametrize("setting", BAD_ENV.keys())
def test_bad_environment(tmp_path, setting):
    args = ["--bind", "127.0.0.1", "--data-dir", str(tmp_path / "data"), "--admin-port", "0"]
    if setting != "port":
        args += ["--port", str(free_port())]
    result = run_kvstore(args, env=BAD_ENV[setting], timeout=10)
    assert_bad_setting(result, setting)


def test_port_service_link_hint(tmp_path):
    args = ["--bind", "127.0.0.1", "--data-dir", str(tmp_path / "data"), "--admin-port", "0"]
    result = run_kvstore(args, env={"PORT": "tcp://10.0.0.1:5555"}, timeout=10)
    assert b"enableServiceLinks" in result.stderr, result.stderr


def test_yaml_with_unknown_key(tmp_path):
    config = tmp_path / "kvstore.yaml"
    config.write_text("port: 5555\nbogus_setting: 1\n")
    result = run_kvstore(base_args(tmp_path) + ["--config", str(config)], timeout=10)
    assert_bad_setting(result, "bogus_setting")


def test_yaml_with_bad_value(tmp_path):
    config = tmp_path / "kvstore.yaml"
    config.write_text("fsync: sometimes\n")
    result = run_kvstore(base_args(tmp_path) + ["--config", str(config)], timeout=10)
    assert_bad_setting(result, "fsync")
    assert str(config) in result.stderr.decode(), "the line should name the file"


def test_missing_yaml_file(tmp_path):
    result = run_kvstore(base_args(tmp_path) + ["--config", str(tmp_path / "nope.yaml")],
                         timeout=10)
    assert_bad_setting(result, "nope.yaml")


def test_data_dir_not_writable(tmp_path):
    not_a_dir = tmp_path / "regular-file"
    not_a_dir.write_text("x")
    args = ["--bind", "127.0.0.1", "--port", str(free_port()), "--admin-port", "0",
            "--data-dir", str(not_a_dir / "data")]
    result = run_kvstore(args, timeout=10)
    assert_bad_setting(result, "data_dir")
    result = run_kvstore(args[:-1] + ["/dev/null/x"], timeout=10)
    assert_bad_setting(result, "data_dir")


def test_command_line_errors_take_one_line(tmp_path):
    for args, setting in ((["--port"], "port"), (["--port", "1", "--port", "2"], "port"),
                          (["--no-such-flag"], "no-such-flag")):
        assert_bad_setting(run_kvstore(args, timeout=10), setting)


def test_yaml_with_two_documents_or_control_characters(tmp_path):
    # The second document was ignored, and its settings with it.
    config = tmp_path / "kvstore.yaml"
    config.write_text("port: 5555\n---\nport: abc\n")
    assert_bad_setting(run_kvstore(["--config", str(config)], timeout=10), "config file")
    # An empty document (a trailing "---", a comment after it) holds nothing to lose.
    config.write_text("master_ordinal: '1'\n---\n# nothing here\n")
    result = run_kvstore(["--config", str(config), "role"], env={"POD_NAME": "kvstore-1"})
    assert result.returncode == 0 and "role: master" in result.stdout.decode(), result
    config.write_bytes(b"port: 1\n\0\n")
    assert_bad_setting(run_kvstore(["--config", str(config)], timeout=10), "config file")


def test_master_address_checked_with_the_master_ordinal(tmp_path):
    # "{ordinal}" was checked as 0 only: ordinal 12 made port 612000.
    result = run_kvstore(["role"], env={"POD_NAME": "kvstore-1", "MASTER_ORDINAL": "12",
                                        "MASTER_ADDRESS": "127.0.0.1:6{ordinal}000"}, timeout=10)
    assert_bad_setting(result, "master_address")
    assert "612000" in result.stderr.decode()
    # Valid wherever the address is not used, or the final MASTER_ORDINAL makes it valid.
    for env, args in (({"POD_NAME": "kvstore-12", "MASTER_ORDINAL": "12"}, []),
                      ({"POD_NAME": "kvstore-1", "MASTER_ORDINAL": "12"},
                       ["--replication-enabled", "false"]),
                      ({"POD_NAME": "kvstore-1", "MASTER_ORDINAL": "12"},
                       ["--master-ordinal", "0"])):
        result = run_kvstore(args + ["role"],
                             env={**env, "MASTER_ADDRESS": "127.0.0.1:6{ordinal}000"}, timeout=10)
        assert result.returncode == 0, (env, args, result)


# ---- which port wins ----

def wait_listening(proc, port, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16) == b"+PONG\r\n":
                    return True
        except OSError:
            time.sleep(0.05)
    return False


def refuses(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except OSError:
        return True


def start_raw(args, env, log_path):
    log = open(log_path, "ab")
    proc = subprocess.Popen([KVSTORE_BIN, *args], stdout=log, stderr=subprocess.STDOUT,
                            env=clean_env(env))
    log.close()
    return proc


def stop_raw(proc, timeout=15):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    return proc.returncode


@pytest.mark.parametrize("layers,winner", [
    (("yaml", "env", "flag"), "flag"),
    (("yaml", "env"), "env"),
    (("yaml",), "yaml"),
])
def test_setting_precedence(tmp_path, layers, winner):
    ports = {"yaml": free_port(), "env": free_port(), "flag": free_port()}
    assert len(set(ports.values())) == 3
    config = tmp_path / "kvstore.yaml"
    config.write_text(f"port: {ports['yaml']}\nbind: 127.0.0.1\nadmin_port: 0\n"
                      f"data_dir: {tmp_path / 'data'}\n")
    args = ["--config", str(config)]
    env = {}
    if "env" in layers:
        env["PORT"] = str(ports["env"])
    if "flag" in layers:
        args += ["--port", str(ports["flag"])]
    proc = start_raw(args, env, tmp_path / "kvstore.log")
    try:
        assert wait_listening(proc, ports[winner]), \
            f"not listening on the {winner} port:\n{(tmp_path / 'kvstore.log').read_text()}"
        for layer, port in ports.items():
            if layer != winner:
                assert refuses(port), f"also listening on the {layer} port"
    finally:
        assert stop_raw(proc) == 0


# ---- role ----

def start_and_read_log(tmp_path, env, wrap=None):
    port = free_port()
    log_path = tmp_path / "kvstore.log"
    args = base_args(tmp_path, port)
    if wrap:
        log = open(log_path, "ab")
        proc = subprocess.Popen([*wrap, KVSTORE_BIN, *args], stdout=log,
                                stderr=subprocess.STDOUT, env=clean_env(env))
        log.close()
    else:
        proc = start_raw(args, env, log_path)
    try:
        assert wait_listening(proc, port), log_path.read_text()
    finally:
        code = stop_raw(proc)
    assert code == 0, log_path.read_text()
    return log_path.read_text()


def test_standalone_when_no_pod_name(tmp_path):
    wrap = None
    if re.search(r"-\d+$", socket.gethostname()):
        # This machine's hostname looks like a pod name: run in a UTS namespace without one.
        probe = subprocess.run(["unshare", "--uts", "true"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip("hostname carries an ordinal and unshare --uts is not permitted")
        wrap = ["unshare", "--uts", "sh", "-c", 'hostname plainhost && exec "$@"', "sh"]
    log = start_and_read_log(tmp_path, {}, wrap)
    lines = [line for line in log.splitlines() if "Starting as MASTER" in line]
    assert len(lines) == 1, log
    assert "standalone" in lines[0], lines[0]


def test_master_by_ordinal(tmp_path):
    log = start_and_read_log(tmp_path, {"POD_NAME": "kvstore-0", "MASTER_ORDINAL": "0"})
    lines = [line for line in log.splitlines() if "Starting as MASTER" in line]
    assert len(lines) == 1, log
    assert "standalone" not in lines[0], lines[0]


def test_role_subcommand_replica(tmp_path):
    result = run_kvstore(["role"], env={"POD_NAME": "kvstore-1", "MASTER_ORDINAL": "0"})
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert "role: replica" in out, out
    assert "kvstore-0.kvstore-headless:5555" in out, out
    result = run_kvstore(["role"], env={"POD_NAME": "kvstore-1", "MASTER_ORDINAL": "0",
                                        "MASTER_ADDRESS": "127.0.0.1:7000"})
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert "role: replica" in out and "127.0.0.1:7000" in out, out
    assert "kvstore-headless" not in out, out
    result = run_kvstore(["role"], env={"POD_NAME": "kvstore-2", "MASTER_ORDINAL": "2"})
    assert "role: master" in result.stdout.decode(), result.stdout


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_configmap_file_that_is_not_a_file_stops_the_start(tmp_path, kind):
    # A directory named like a setting crashed the start (an uncaught read exception) and a FIFO
    # hung it (opening it waits for a writer).
    config_dir = tmp_path / "configmap"
    config_dir.mkdir()
    if kind == "directory":
        (config_dir / "LOG_LEVEL").mkdir()
    else:
        os.mkfifo(config_dir / "LOG_LEVEL")
    result = run_kvstore(base_args(tmp_path) + ["--config-dir", str(config_dir)], timeout=10)
    assert_bad_setting(result, "LOG_LEVEL")
    assert "not a regular file" in result.stderr.decode()


def test_pod_name_from_the_yaml_file_decides_the_role_but_not_from_the_configmap(tmp_path):
    config = tmp_path / "kvstore.yaml"
    config.write_text("pod_name: kvstore-1\nmaster_ordinal: '0'\n")
    result = run_kvstore(["--config", str(config), "role"])
    out = result.stdout.decode()
    assert result.returncode == 0 and "role: replica" in out and "pod: kvstore-1" in out, out
    # Not from the ConfigMap: every pod mounts the same one, and all would take one identity.
    config_dir = tmp_path / "configmap"
    config_dir.mkdir()
    (config_dir / "POD_NAME").write_text("kvstore-2\n")
    result = run_kvstore(["--config-dir", str(config_dir), "role"])
    assert_bad_setting(result, "pod_name")
    assert "shared by every pod" in result.stderr.decode()


def test_an_empty_pod_name_means_the_hostname(tmp_path):
    for env, args in (({"POD_NAME": ""}, ["role"]), ({}, ["--pod-name", "", "role"])):
        result = run_kvstore(args, env=env)
        assert result.returncode == 0, result.stderr
        assert f"pod: {socket.gethostname()}" in result.stdout.decode(), result.stdout


def test_a_running_pod_keeps_its_role_when_the_configmap_file_goes_bad(tmp_path):
    # The environment says MASTER_ORDINAL 1 (as when the pod started, before a promotion); the
    # ConfigMap file says 0, so kvstore-0 is the master. The file disappearing must not hand the
    # role back to the environment's value, and a file that cannot be read must not stop the pod.
    config_dir = tmp_path / "configmap"
    config_dir.mkdir()
    (config_dir / "MASTER_ORDINAL").write_text("0\n")
    port = free_port()
    log_path = tmp_path / "kvstore.log"
    env = {"POD_NAME": "kvstore-0", "MASTER_ORDINAL": "1",
           "MASTER_ADDRESS": f"127.0.0.1:{free_port()}", **ALONE}
    proc = start_raw(base_args(tmp_path, port) + ["--config-dir", str(config_dir),
                                                  "--config-poll-ms", "50"], env, log_path)
    try:
        assert wait_listening(proc, port), log_path.read_text()
        with RespConn(port) as conn:
            assert conn.call("SET", "k", "1") == "OK"
            (config_dir / "MASTER_ORDINAL").unlink()
            time.sleep(0.5)  # ten polls
            assert conn.call("SET", "k", "2") == "OK", log_path.read_text()
            (config_dir / "MASTER_ORDINAL").mkdir()
            time.sleep(0.5)
            assert proc.poll() is None, log_path.read_text()
            assert conn.call("SET", "k", "3") == "OK", log_path.read_text()
        log = log_path.read_text()
        assert "disappeared" in log and "not a regular file" in log, log
        assert "role change requested" not in log, log
    finally:
        assert stop_raw(proc) == 0, log_path.read_text()


def test_a_port_in_use_stops_the_start_before_a_master_opens_an_epoch(tmp_path):
    port = free_port()
    log_path = tmp_path / "kvstore.log"
    env = {"POD_NAME": "kvstore-0", "MASTER_ORDINAL": "0", **ALONE}

    def epoch():
        proc = start_raw(base_args(tmp_path, port), env, log_path)
        try:
            assert wait_listening(proc, port), log_path.read_text()
            with RespConn(port) as conn:
                info = conn.call("INFO", "replication")
        finally:
            assert stop_raw(proc) == 0
        return int(re.search(rb"kvstore_epoch:(\d+)", info).group(1))

    first = epoch()
    admin_port = free_port()
    for busy in (port, admin_port):  # the client port, then the admin port: each start fails
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", busy))
            squatter.listen()
            for _ in range(3):
                args = base_args(tmp_path, port)
                args[args.index("--admin-port") + 1] = str(admin_port)
                result = run_kvstore(args, env=env, timeout=20)
                assert result.returncode == 1, result.stderr
    # One epoch per start that took the role, none for the failed ones.
    assert epoch() == first + 1


# ---- shutdown, logs, version ----

def test_sigterm_on_idle_server(tmp_path):
    port = free_port()
    log_path = tmp_path / "kvstore.log"
    proc = start_raw(base_args(tmp_path, port), {}, log_path)
    assert wait_listening(proc, port), log_path.read_text()
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)  # an idle client is no excuse
    try:
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = proc.wait(timeout=10)
        elapsed = time.monotonic() - started
    finally:
        idle.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = log_path.read_text()
    assert code == 0, log
    assert elapsed < 3, f"an idle server took {elapsed:.1f} s to stop"
    assert "shutdown" in log.lower(), log
    assert len([line for line in log.splitlines() if "shutdown" in line.lower()]) >= 2, log


def test_sigterm_during_a_long_replay_exits_0_and_the_next_start_finishes_it(tmp_path):
    """A start that replays a long log (LMDB is synced at checkpoints; here its files are rolled
    back to an older copy, as a power cut leaves them) stops at once on SIGTERM with exit 0, and
    the next start replays everything."""
    port = free_port()
    args = base_args(tmp_path, port) + ["--fsync", "never"]
    data = tmp_path / "data"
    proc = start_raw(args, {}, tmp_path / "first.log")
    assert wait_listening(proc, port)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    old_db = tmp_path / "db-before"
    shutil.copytree(data / "db", old_db)

    proc = start_raw(args, {}, tmp_path / "second.log")
    assert wait_listening(proc, port)
    result = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set", "-n", "1000000",
                             "-r", "100000000", "-P", "64", "-c", "4", "-d", "16", "-q"],
                            capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with RespConn(port) as conn:
        keys = conn.call("DBSIZE")
    assert keys > 900000, keys
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    shutil.rmtree(data / "db")
    shutil.copytree(old_db, data / "db")

    log_path = tmp_path / "third.log"
    proc = start_raw(args, {}, log_path)
    try:
        deadline = time.monotonic() + 20
        while "replaying log entries" not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = log_path.read_text()
    assert code == 0, log
    assert "stop signal during start-up" in log, log
    assert "replay done" not in log, "the replay finished before the signal: make it longer"

    proc = start_raw(args, {}, tmp_path / "fourth.log")
    try:
        assert wait_listening(proc, port, timeout=60), (tmp_path / "fourth.log").read_text()
        with RespConn(port) as conn:
            assert conn.call("DBSIZE") == keys
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_shutdown_command_stops_gracefully_and_keeps_the_data(make_server):
    server = make_server(env={"KVSTORE_PASSWORD": "pw"})
    client = server.client(password="pw")
    client.set("before-shutdown", "kept")
    with RespConn(server.port) as conn:
        assert conn.call("SHUTDOWN") == RespError("NOAUTH Authentication required.")
        assert conn.call("AUTH", "pw") == "OK"
        for refused in ("NOW", "force", "ABORT"):
            error = conn.call("SHUTDOWN", refused)
            assert isinstance(error, RespError) and "not supported" in str(error), error
        assert conn.call("SHUTDOWN", "SAVE", "x") == RespError("ERR syntax error")
        assert server.proc.poll() is None  # none of those stopped it
        conn.send(encode_command("SHUTDOWN", "NOSAVE"))
        with pytest.raises(ConnectionError):  # as in Redis: no reply, the connection closes
            conn.read_reply()
    code = server.proc.wait(timeout=15)
    assert code == 0, server.logs()
    assert "requested by the SHUTDOWN command" in server.logs()
    server.start()
    assert server.client(password="pw").get("before-shutdown") == b"kept"


def test_json_logs(tmp_path):
    port = free_port()
    log_path = tmp_path / "kvstore.log"
    proc = start_raw(base_args(tmp_path, port), {"LOG_FORMAT": "json"}, log_path)
    try:
        assert wait_listening(proc, port), log_path.read_text()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"SET k v\r\n")
            assert s.recv(16) == b"+OK\r\n"
    finally:
        assert stop_raw(proc) == 0
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    assert len(lines) >= 3, lines
    for line in lines:
        record = json.loads(line)
        assert isinstance(record, dict), line
        for key in ("time", "level", "message"):
            assert key in record, f"{key} missing in {line}"
    messages = " ".join(json.loads(line)["message"] for line in lines)
    assert "Starting as MASTER" in messages


def test_version():
    result = run_kvstore(["--version"], timeout=10)
    assert result.returncode == 0, result.stderr
    assert re.search(rb"\d+\.\d+\.\d+", result.stdout), result.stdout
