"""kvctl against a real server: every subcommand, stdin values, exit codes (0 ok, 1 missing key or
error reply, 2 usage, 3 unreachable) and the JSON status."""
import json
import random
import socket
import subprocess

from conftest import KVCTL_BIN, clean_env


def ok(result):
    assert result.returncode == 0, (f"exit {result.returncode}; stdout {result.stdout!r}; "
                                    f"stderr {result.stderr!r}")
    return result


def test_put_read_get_delete(module_server, r):
    ok(module_server.kvctl("put", "greeting", "hello"))
    assert r.get("greeting") == b"hello"
    assert ok(module_server.kvctl("read", "greeting")).stdout == b"hello"
    assert ok(module_server.kvctl("get", "greeting")).stdout == b"hello"
    ok(module_server.kvctl("put", "greeting", "hello again"))
    assert ok(module_server.kvctl("read", "greeting")).stdout == b"hello again"
    ok(module_server.kvctl("delete", "greeting"))
    assert r.exists("greeting") == 0


def test_put_value_starting_with_dash(module_server, r):
    ok(module_server.kvctl("put", "--", "neg", "-5"))
    assert r.get("neg") == b"-5"


def test_put_from_stdin_is_binary_safe(module_server, r):
    payload = bytes(range(256)) * 4 + b"\r\n\x00" + random.Random(1).randbytes(100000) + b"\n"
    result = ok(module_server.kvctl("put", "blob", "-", input=payload))
    assert r.get("blob") == payload
    assert result.stderr == b""
    out = ok(module_server.kvctl("read", "blob"))
    assert out.stdout == payload, "read output redirected must be the exact bytes"
    empty = ok(module_server.kvctl("put", "empty", "-", input=b""))
    assert empty.returncode == 0
    assert r.get("empty") == b""
    assert ok(module_server.kvctl("read", "empty")).stdout == b""


def test_missing_key(module_server, r):
    result = module_server.kvctl("read", "no-such-key")
    assert result.returncode == 1
    assert result.stdout == b""
    assert b"no-such-key" in result.stderr
    result = module_server.kvctl("delete", "no-such-key")
    assert result.returncode == 1
    assert result.stderr.strip()


def test_error_reply_exits_1(module_server, r):
    result = module_server.kvctl("put", "k" * 600, "v")
    assert result.returncode == 1
    assert b"511" in result.stderr, result.stderr


def test_scan_prefix_and_limit(module_server, r):
    r.mset({f"user:{i:03d}": "u" for i in range(120)})
    r.mset({f"order:{i:03d}": "o" for i in range(30)})
    r.mset({"a*b1": "x", "axb2": "x", "a?c": "x", "a[b]": "x"})
    out = ok(module_server.kvctl("scan", "--prefix", "user:")).stdout.decode()
    assert out.splitlines() == [f"user:{i:03d}" for i in range(120)]
    everything = ok(module_server.kvctl("scan")).stdout.decode().splitlines()
    assert sorted(everything) == sorted(k.decode() for k in r.keys("*"))
    assert len(everything) == 154
    limited = ok(module_server.kvctl("scan", "--prefix", "order:", "--limit", "7"))
    assert limited.stdout.decode().splitlines() == [f"order:{i:03d}" for i in range(7)]
    # The prefix is literal, not a glob.
    assert ok(module_server.kvctl("scan", "--prefix", "a*b")).stdout == b"a*b1\n"
    assert ok(module_server.kvctl("scan", "--prefix", "a?")).stdout == b"a?c\n"
    assert ok(module_server.kvctl("scan", "--prefix", "a[b")).stdout == b"a[b]\n"
    assert ok(module_server.kvctl("scan", "--prefix", "nothing")).stdout == b""


def test_status(module_server, r):
    r.mset({f"s{i}": "v" for i in range(42)})
    out = ok(module_server.kvctl("status")).stdout.decode()
    assert "master" in out, out
    assert "42" in out, out
    result = ok(module_server.kvctl("status", "--json"))
    status = json.loads(result.stdout)
    assert status["role"] == "master", status
    assert status["keys"] == r.dbsize() == 42, status
    r.flushall()
    assert json.loads(ok(module_server.kvctl("status", "--json")).stdout)["keys"] == 0


def test_ping(module_server):
    result = ok(module_server.kvctl("ping"))
    assert b"PONG" in result.stdout


def test_unreachable_server_exits_3(tmp_path):
    with socket.socket() as s:  # a port nobody listens on: bound but never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        for args in (["ping"], ["read", "k"], ["put", "k", "v"], ["status", "--json"]):
            result = subprocess.run([KVCTL_BIN, "--port", str(port), *args], capture_output=True,
                                    timeout=30, env=clean_env())
            lines = result.stderr.decode().splitlines()
            assert result.returncode == 3, (args, result)
            assert len(lines) == 1, f"{args}: expected one line on stderr, got {lines}"
            assert f"127.0.0.1:{port}" in lines[0], lines[0]
            assert result.stdout == b""


def test_usage_errors_exit_2(module_server):
    for args in (["frobnicate"], [], ["put", "only-a-key"], ["read"],
                 ["scan", "--limit", "many"], ["scan", "--limit", "-1"]):
        result = module_server.kvctl(*args)
        assert result.returncode == 2, (args, result)
    result = subprocess.run([KVCTL_BIN, "--port", "notaport", "ping"], capture_output=True,
                            timeout=30, env=clean_env())
    assert result.returncode == 2
    # A misspelt command is named, with the ones that exist.
    result = module_server.kvctl("stauts", "--json")
    assert result.returncode == 2
    assert result.stderr.decode().startswith("kvctl: unknown command 'stauts' (commands: put, "), \
        result.stderr
    assert result.stdout == b""
