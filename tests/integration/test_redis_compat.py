"""kvstore against a real redis-server, side by side in the same run: for the commands both
have, the same requests get the same replies, error texts included (client libraries match
those texts). The redis-server is the one tests and benchmarks install (Debian's, 7.x)."""
import shutil
import subprocess
import time

import pytest

from conftest import RespConn, RespError, free_port


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory):
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (scripts/install-deps.sh installs it)"
    directory = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(directory)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with RespConn(port, timeout=1) as conn:
                if conn.call("PING") == "PONG":
                    break
        except OSError:
            pass
        assert proc.poll() is None, "redis-server exited at start-up"
        assert time.monotonic() < deadline, "redis-server did not answer PING within 10 s"
        time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


# Each case runs on an empty key space on both servers; every reply must match.
CASES = [
    # Arity and syntax.
    [("GET",)], [("SET", "a")], [("SET", "a", "b", "c")], [("SET", "a", "b", "NX", "XX")],
    [("GETDEL",)], [("MSET", "a")], [("MGET",)], [("DEL",)], [("UNLINK",)], [("EXISTS",)],
    [("APPEND", "a")], [("STRLEN",)], [("TYPE",)], [("KEYS",)], [("DBSIZE", "x")],
    [("PING", "a", "b")], [("ECHO",)], [("TIME", "x")], [("ROLE", "x")], [("QUIT", "x")],
    [("INFO", "a", "b", "c", "d")],
    # Values.
    [("SET", "a", "x"), ("INCR", "a")], [("INCRBY", "a", "x")], [("INCRBY", "a", "1.5")],
    [("DECRBY", "a", "99999999999999999999")],
    [("SET", "n", str(2**63 - 1)), ("INCR", "n")],
    [("SET", "a", "b", "GET"), ("SET", "a", "c", "GET"), ("GETDEL", "a"), ("GETDEL", "a")],
    [("SET", "a", "1", "NX"), ("SET", "a", "2", "NX"), ("SET", "b", "1", "XX"), ("MGET", "a", "b")],
    [("TYPE", "nokey"), ("SET", "k", "v"), ("TYPE", "k"), ("APPEND", "k", "w"), ("STRLEN", "k")],
    [("SETNX", "a", "1"), ("SETNX", "a", "2"), ("GET", "a")],
    [("GETSET", "a", "1"), ("GETSET", "a", "2"), ("GET", "a")],
    [("MSETNX", "a", "1", "b", "2"), ("MSETNX", "b", "3", "c", "4"), ("MGET", "a", "b", "c")],
    [("MSETNX", "a")], [("MSETNX", "a", "1", "b")],
    [("SET", "s", "Hello World"), ("GETRANGE", "s", "0", "4"), ("GETRANGE", "s", "-5", "-1"),
     ("GETRANGE", "s", "-1", "-5"), ("GETRANGE", "s", "5", "100"), ("GETRANGE", "s", "100", "200"),
     ("GETRANGE", "s", "-100", "3"), ("GETRANGE", "s", "3", "-100"), ("GETRANGE", "nokey", "0", "-1"),
     ("GETRANGE", "s", "x", "1"), ("SUBSTR", "s", "0", "2"), ("GETRANGE", "s", "0", "-1")],
    [("SETRANGE", "k", "5", "abc"), ("GET", "k"), ("SETRANGE", "k", "0", "XY"), ("GET", "k"),
     ("SETRANGE", "k", "1", ""), ("SETRANGE", "n", "0", ""), ("EXISTS", "n"),
     ("SETRANGE", "k", "-1", "x"), ("SETRANGE", "k", "x", "y"), ("SETRANGE", "k", "9", "z"),
     ("GET", "k")],
    [("TTL", "a"), ("PTTL", "a"), ("SET", "a", "1"), ("TTL", "a"), ("PTTL", "a"),
     ("PERSIST", "a"), ("PERSIST", "zz")],
    [("SETEX", "a", "1")], [("PSETEX", "a")], [("EXPIRE", "a")], [("GETRANGE", "a", "1")],
    [("SETRANGE", "a", "1")], [("TTL",)], [("SETNX", "a")],
    # SCAN's arguments.
    [("SCAN",)], [("SCAN", "x")], [("SCAN", "0", "COUNT", "0")], [("SCAN", "0", "COUNT", "x")],
    [("SCAN", "0", "MATCH")], [("SCAN", "0", "FOO", "bar")],
    [("FLUSHALL", "FOO")], [("FLUSHDB", "FOO")], [("FLUSHDB", "ASYNC")],
    # Connection.
    [("SELECT", "x")], [("AUTH",)], [("AUTH", "a", "b", "c")], [("HELLO", "4")], [("HELLO", "x")],
    [("HELLO", "2", "FOO")], [("WAIT",)], [("WAIT", "x", "0")], [("WAIT", "0", "x")],
    [("WAIT", "0", "-1")],
    # Container commands: a wrong arity names "command|sub"; an unknown sub points to HELP.
    [("CLIENT",)], [("CLIENT", "ID", "x")], [("CLIENT", "FOO")], [("CLIENT", "GETNAME", "x")],
    [("CLIENT", "SETNAME")], [("CLIENT", "SETNAME", "a b")],
    [("CLIENT", "SETNAME", "me"), ("CLIENT", "GETNAME")],
    [("CLIENT", "LIST", "TYPE", "foo")], [("CLIENT", "LIST", "ID", "x")],
    [("CLIENT", "LIST", "ID", "0", "-1")], [("CLIENT", "LIST", "FOO")], [("CLIENT", "LIST", "ID")],
    [("CLIENT", "LIST", "TYPE", "normal", "x")], [("CLIENT", "LIST", "TYPE", "Replica")],
    [("CLIENT", "LIST", "TYPE", "master")], [("CLIENT", "LIST", "TYPE", "pubsub")],
    # Redis lists several parameters in its hash table's order: one at a time.
    [("CONFIG", "GET", "maxmemory-policy")], [("CONFIG", "GET", "cluster-enabled")],
    [("CONFIG", "GET", "replica-read-only")],
    [("CONFIG",)], [("CONFIG", "GET")], [("CONFIG", "FOO")], [("CONFIG", "GET", "databases_")],
    [("COMMAND", "COUNT", "x")], [("COMMAND", "FOO")], [("COMMAND", "INFO", "nosuch")],
    [("CLIENT", "HELP", "x")], [("CONFIG", "s" * 200)],
    # Transactions: replies, queued-command errors, EXECABORT, WATCH, nesting.
    [("MULTI",), ("SET", "a", "1"), ("INCR", "a"), ("GET", "a"), ("MGET", "a", "b"), ("EXEC",),
     ("GET", "a")],
    [("SET", "s", "x"), ("MULTI",), ("INCR", "s"), ("SET", "t", "1"), ("EXEC",), ("GET", "t")],
    [("MULTI",), ("SET", "a", "1"), ("FOO",), ("EXEC",), ("GET", "a")],
    [("MULTI",), ("SET", "a"), ("SET", "b", "1"), ("EXEC",), ("EXISTS", "b")],
    [("MULTI",), ("MULTI",), ("WATCH", "a"), ("PING",), ("ECHO", "e"), ("EXEC",)],
    [("EXEC",)], [("DISCARD",)], [("MULTI", "x")], [("EXEC", "x")], [("WATCH",)],
    [("MULTI",), ("SET", "a", "1"), ("DISCARD",), ("GET", "a"), ("EXEC",)],
    [("MULTI",), ("EXEC",)],
    [("WATCH", "a", "b"), ("MULTI",), ("SET", "a", "1"), ("EXEC",), ("GET", "a")],
    [("WATCH", "a"), ("UNWATCH",), ("MULTI",), ("UNWATCH",), ("DEL", "a"), ("EXEC",)],
    [("SET", "a", "x"), ("MULTI",), ("APPEND", "a", "y"), ("STRLEN", "a"), ("TYPE", "a"),
     ("GETDEL", "a"), ("EXISTS", "a"), ("DBSIZE",), ("EXEC",)],
    [("MULTI",), ("GET", "a"), ("EXISTS", "a"), ("EXEC",)],
    # MEMORY USAGE (redis-cli --memkeys): the answers and errors that do not depend on sizes.
    [("MEMORY",)], [("MEMORY", "USAGE")], [("MEMORY", "FOO")], [("MEMORY", "USAGE", "nokey")],
    [("SET", "a", "b"), ("MEMORY", "USAGE", "a", "SAMPLES")],
    [("SET", "a", "b"), ("MEMORY", "USAGE", "a", "SAMPLES", "x")],
    [("SET", "a", "b"), ("MEMORY", "USAGE", "a", "SAMPLES", "-1")],
    [("SET", "a", "b"), ("MEMORY", "USAGE", "a", "BOGUS", "1")],
    # Unknown commands: each argument quoted and cut at 128 bytes.
    [("FOO", "arg")], [("NOSUCH", "a" * 200, "b")], [("FOO", "a\r\nb")], [("x" * 200,)],
    [("FOO",) + tuple("abcdefghij" * 3) * 2],
]


def case_id(case):
    return " / ".join(" ".join(a if len(a) < 20 else a[:8] + "..." for a in cmd) for cmd in case)


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_same_replies_as_redis(module_server, redis_port, case):
    replies = {}
    for name, port in (("redis", redis_port), ("kvstore", module_server.port)):
        with RespConn(port) as conn:
            assert conn.call("FLUSHALL") == "OK"
            replies[name] = [conn.call(*command) for command in case]
    assert replies["kvstore"] == replies["redis"]


def test_command_info_without_names_describes_every_command(module_server, redis_port):
    for port in (redis_port, module_server.port):
        with RespConn(port) as conn:
            count = conn.call("COMMAND", "COUNT")
            everything = conn.call("COMMAND", "INFO")
            assert isinstance(everything, list) and len(everything) == count, port
            assert all(isinstance(entry, list) for entry in everything), port
    with RespConn(module_server.port) as conn:
        names = {entry[0] for entry in conn.call("COMMAND", "INFO")}
        assert {b"get", b"set", b"scan", b"client"} <= names


@pytest.mark.parametrize("command", ["CLIENT", "CONFIG", "COMMAND", "MEMORY"])
def test_help_lists_subcommands_that_exist(module_server, redis_port, command):
    with RespConn(redis_port) as conn:
        redis_help = conn.call(command, "HELP")
    with RespConn(module_server.port) as conn:
        lines = conn.call(command, "HELP")
        assert lines[0] == redis_help[0], lines[0]  # the same header line
        assert lines[-2:] == ["HELP", "    Print this help."]
        subcommands = [line.split()[0] for line in lines[1:-2] if not line.startswith(" ")]
        assert subcommands, lines
        for sub in subcommands:
            reply = conn.call(command, sub, *(["x"] * 5))
            assert not (isinstance(reply, RespError) and "unknown subcommand" in str(reply)), sub


def client_fields(port, *command):
    """The field names and values of the CLIENT LIST line of a connection that sent `command`."""
    with RespConn(port) as conn:
        if command:
            conn.call(*command)
        line = conn.call("CLIENT", "INFO").decode()
    return [tuple(field.split("=", 1)) for field in line.split()]


def test_client_info_has_redis_fields_in_order(module_server, redis_port):
    # Clients index the fields by name, some by position; redis-server 7.2 adds lib-name and
    # lib-ver at the end, which kvstore already has.
    expected = [name for name, _ in client_fields(redis_port)]
    expected += [name for name in ("lib-name", "lib-ver") if name not in expected]
    fields = client_fields(module_server.port, "PING")
    assert [name for name, _ in fields] == expected
    values = dict(fields)
    assert (values["cmd"], values["flags"], values["multi"], values["user"], values["resp"]) == (
        "client|info", "N", "-1", "default", "2")


def test_redis_py_parses_client_info_and_list(module_server):
    client = module_server.client(decode_responses=True)
    client.client_setname("parser")
    info = client.client_info()  # KeyError: 'multi' when a field redis-py reads was missing
    assert (info["name"], info["multi"], info["db"], info["cmd"]) == ("parser", -1, 0, "client|info")
    with RespConn(module_server.port):  # a connection that has sent nothing has no last command
        listed = {entry["id"]: entry for entry in client.client_list()}
    assert listed[str(info["id"])]["name"] == "parser"
    assert [entry["cmd"] for entry in listed.values() if entry["name"] != "parser"] == ["NULL"]
    client.close()
