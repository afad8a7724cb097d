"""The admin HTTP port of the real server: /healthz, /readyz and /metrics answer on
--admin-port, the metrics follow the key space and the log, and a taken admin port stops the
start with one line naming it (exit code 1)."""
import socket
import subprocess
import urllib.error
import urllib.request

from conftest import KVSTORE_BIN, KvServer, clean_env, free_port


class AdminKvServer(KvServer):
    """A KvServer whose admin port is on (the shared fixture turns it off)."""

    def __init__(self, data_dir, admin_port):
        super().__init__(data_dir)
        self.admin_port = admin_port

    def command(self):
        command = super().command()
        command[command.index("--admin-port") + 1] = str(self.admin_port)
        return command


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def metric(text, name):
    values = [line.split()[1] for line in text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, f"{name} in:\n{text}"
    return int(values[0])


def test_probes_and_metrics_follow_the_engine(tmp_path):
    server = AdminKvServer(tmp_path / "data", free_port())
    server.start()
    try:
        assert get(server.admin_port, "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
        assert get(server.admin_port, "/readyz")[::2] == (200, "ok: master\n")
        status, content_type, text = get(server.admin_port, "/metrics")
        assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
        assert metric(text, "kvstore_up") == 1
        assert metric(text, "kvstore_keys") == 0
        before = metric(text, "kvstore_log_last_seq")

        client = server.client()
        for i in range(3):
            client.set(f"k{i}", "v")
        client.close()
        text = get(server.admin_port, "/metrics")[2]
        assert metric(text, "kvstore_keys") == 3
        assert metric(text, "kvstore_log_last_seq") == before + 3
        assert metric(text, "kvstore_applied_seq") == before + 3
        assert metric(text, "kvstore_writes_disabled") == 0
        assert "# TYPE kvstore_keys gauge" in text
        assert get(server.admin_port, "/")[0] == 404
    finally:
        assert server.stop() == 0
    assert not server.sanitizer_reports(), server.sanitizer_reports()


def test_a_taken_admin_port_stops_the_start(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        admin_port = taken.getsockname()[1]
        result = subprocess.run(
            [KVSTORE_BIN, "--bind", "127.0.0.1", "--port", str(free_port()), "--admin-port",
             str(admin_port), "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=30, env=clean_env())
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on admin port 127.0.0.1:{admin_port}: Address already in use" in \
        result.stderr + result.stdout
