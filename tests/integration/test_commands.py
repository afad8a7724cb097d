"""Commands end to end: redis-cli, redis-py and a raw RESP connection (for exact error texts)
against one real kvstore process. Every test starts from an empty key space (FLUSHALL)."""
import random
import threading
import time

import pytest
import redis

from conftest import RespConn, RespError


@pytest.fixture
def raw(module_server, r):
    with RespConn(module_server.port) as conn:
        yield conn


def assert_error(reply, prefix):
    assert isinstance(reply, RespError), f"expected an error starting {prefix!r}, got {reply!r}"
    assert str(reply).startswith(prefix), f"expected an error starting {prefix!r}, got {reply!r}"


# ---- connection ----

def test_ping_and_echo(module_server, raw):
    assert module_server.cli("ping").strip() == "PONG"
    assert module_server.cli("ping", "hello there").strip() == "hello there"
    assert module_server.cli("echo", "x y").strip() == "x y"
    assert raw.call("PING") == "PONG"
    assert raw.call("ping", "msg") == b"msg"
    assert raw.call("ECHO", b"a\r\nb") == b"a\r\nb"
    assert_error(raw.call("PING", "a", "b"), "ERR wrong number of arguments for 'ping' command")


def test_select(raw):
    assert raw.call("SELECT", "0") == "OK"
    assert_error(raw.call("SELECT", "1"), "ERR DB index is out of range")
    assert_error(raw.call("SELECT", "x"), "ERR value is not an integer or out of range")


# ---- strings ----

def test_set_get_with_redis_cli(module_server, r):
    assert module_server.cli("set", "a", "1").strip() == "OK"
    assert module_server.cli("get", "a").strip() == "1"
    assert module_server.cli("incr", "a").strip() == "2"
    assert r.get("a") == b"2"
    assert module_server.cli("get", "missing") == "\n"


def test_set_get(r):
    assert r.set("k", "v") is True
    assert r.get("k") == b"v"
    assert r.set("k", "w") is True
    assert r.get("k") == b"w"
    assert r.get("nope") is None
    r.set("empty", "")
    assert r.get("empty") == b""
    assert r.exists("empty") == 1


def test_set_nx_xx_get_keepttl(raw, r):
    assert raw.call("SET", "k", "1", "NX") == "OK"
    assert raw.call("SET", "k", "2", "NX") is None
    assert r.get("k") == b"1"
    assert raw.call("SET", "absent", "x", "XX") is None
    assert r.exists("absent") == 0
    assert raw.call("SET", "k", "3", "XX") == "OK"
    assert r.get("k") == b"3"
    assert raw.call("SET", "k", "4", "GET") == b"3"
    assert raw.call("SET", "new", "v", "GET") is None
    assert r.get("new") == b"v"
    assert raw.call("SET", "k", "5", "NX", "GET") == b"4"  # not written, old value returned
    assert r.get("k") == b"4"
    assert raw.call("SET", "k", "6", "KEEPTTL") == "OK"
    assert r.get("k") == b"6"
    assert_error(raw.call("SET", "k", "7", "NX", "XX"), "ERR syntax error")
    assert_error(raw.call("SET", "k", "7", "BOGUS"), "ERR syntax error")
    assert r.get("k") == b"6"


@pytest.mark.parametrize("option", [["EX", "10"], ["PX", "100"], ["EXAT", "9999999999"],
                                    ["PXAT", "9999999999999"]])
def test_set_with_expiry_is_refused_not_ignored(raw, r, option):
    reply = raw.call("SET", "exp", "v", *option)
    assert_error(reply, "ERR")
    assert "expire" in str(reply) or "not supported" in str(reply), reply
    assert r.exists("exp") == 0, "a refused SET must not store the value"
    with pytest.raises(redis.ResponseError):
        r.set("exp", "v", ex=10)
    assert r.exists("exp") == 0


@pytest.mark.parametrize("command", [["SETEX", "exp", "10", "v"], ["PSETEX", "exp", "100", "v"],
                                     ["EXPIRE", "exp", "10"], ["PEXPIRE", "exp", "100"],
                                     ["EXPIREAT", "exp", "9999999999"],
                                     ["PEXPIREAT", "exp", "9999999999999"]])
def test_commands_that_set_a_ttl_are_refused_not_ignored(raw, r, command):
    r.delete("exp")
    reply = raw.call(*command)
    assert_error(reply, f"ERR {command[0]} is not supported: kvstore keys do not expire")
    assert r.exists("exp") == 0, "a refused SETEX must not store the value"
    r.set("exp", "kept")
    assert_error(raw.call(*command), "ERR")
    assert r.get("exp") == b"kept" and r.ttl("exp") == -1


def test_getdel(raw, r):
    r.set("k", "v")
    assert raw.call("GETDEL", "k") == b"v"
    assert r.exists("k") == 0
    assert raw.call("GETDEL", "k") is None


def test_del_multi_and_exists_counts_repeats(r):
    r.mset({"a": "1", "b": "2", "c": "3"})
    assert r.exists("a", "a", "b", "zz") == 3
    assert r.delete("a", "b", "zz", "a") == 2
    assert r.exists("a", "b", "c") == 1
    assert r.execute_command("UNLINK", "c") == 1
    assert r.dbsize() == 0


def test_mget_mset(raw, r):
    assert r.mset({"k1": "v1", "k2": "v2", "k3": b"\x00\xff"}) is True
    assert r.mget("k1", "missing", "k2", "k3") == [b"v1", None, b"v2", b"\x00\xff"]
    assert_error(raw.call("MSET", "a", "1", "b"), "ERR wrong number of arguments for 'mset' command")
    assert r.exists("a") == 0, "a rejected MSET must not store any pair"


def test_incr_decr(raw, r):
    assert raw.call("INCR", "n") == 1
    assert raw.call("INCRBY", "n", "41") == 42
    assert raw.call("DECR", "n") == 41
    assert raw.call("DECRBY", "n", "50") == -9
    assert raw.call("INCRBY", "n", "-1") == -10
    assert r.get("n") == b"-10"
    assert raw.call("DECR", "fresh") == -1


def test_incr_errors(raw, r):
    not_integer = "ERR value is not an integer or out of range"
    r.set("s", "abc")
    assert str(raw.call("INCR", "s")) == not_integer
    assert str(raw.call("DECRBY", "s", "1")) == not_integer
    r.set("spaced", " 1")
    assert str(raw.call("INCR", "spaced")) == not_integer
    assert str(raw.call("INCRBY", "n", "abc")) == not_integer
    assert str(raw.call("INCRBY", "n", "1.5")) == not_integer
    assert str(raw.call("INCRBY", "n", "99999999999999999999")) == not_integer
    assert r.get("s") == b"abc" and r.get("spaced") == b" 1" and r.exists("n") == 0
    r.set("big", "9223372036854775807")
    assert_error(raw.call("INCR", "big"), "ERR increment or decrement would overflow")
    assert_error(raw.call("INCRBY", "big", "1"), "ERR increment or decrement would overflow")
    r.set("small", "-9223372036854775808")
    assert_error(raw.call("DECR", "small"), "ERR increment or decrement would overflow")
    assert r.get("big") == b"9223372036854775807"
    assert r.get("small") == b"-9223372036854775808"


def test_append_strlen_type(r):
    assert r.append("s", "hello") == 5
    assert r.append("s", " world") == 11
    assert r.get("s") == b"hello world"
    assert r.strlen("s") == 11
    assert r.strlen("missing") == 0
    assert r.type("s") == b"string"
    assert r.type("missing") == b"none"


# ---- keyspace ----

def test_dbsize_and_flushall(module_server, r):
    r.mset({f"k{i}": str(i) for i in range(100)})
    assert r.dbsize() == 100
    assert module_server.cli("dbsize").strip() == "100"
    assert module_server.cli("flushall").strip() == "OK"
    assert r.dbsize() == 0
    assert r.get("k1") is None
    r.set("after", "1")
    assert r.execute_command("FLUSHDB") in (True, b"OK", "OK")
    assert r.dbsize() == 0


def test_keys_patterns(r):
    for key in ["hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo", "other", "h?llo"]:
        r.set(key, "1")

    def keys(pattern):
        return sorted(k.decode() for k in r.keys(pattern))

    assert len(keys("*")) == 8
    assert keys("h?llo") == ["h*llo", "h?llo", "hallo", "hello", "hxllo"]
    assert keys("h*llo") == ["h*llo", "h?llo", "hallo", "heeeello", "hello", "hllo", "hxllo"]
    assert keys("h[ae]llo") == ["hallo", "hello"]
    assert keys("h[^e]llo") == ["h*llo", "h?llo", "hallo", "hxllo"]
    assert keys("h[a-b]llo") == ["hallo"]
    assert keys("h\\*llo") == ["h*llo"]
    assert keys("oth*") == ["other"]
    assert keys("nomatch*") == []


def scan_all(client, count, match=None, limit_calls=100000):
    """Full SCAN loop: returns the list of keys in the order returned (duplicates kept)."""
    cursor, seen, calls = 0, [], 0
    while True:
        cursor, keys = client.scan(cursor, match=match, count=count)
        seen.extend(keys)
        calls += 1
        assert calls < limit_calls, "SCAN did not terminate"
        if cursor == 0:
            return seen, calls


def test_scan_returns_every_key_exactly_once(r):
    expected = {f"key:{i:05d}".encode() for i in range(2000)}
    pipe = r.pipeline(transaction=False)
    for key in expected:
        pipe.set(key, "v")
    pipe.execute()
    seen, calls = scan_all(r, count=7)
    assert len(seen) == len(set(seen)), "SCAN returned duplicates"
    assert set(seen) == expected
    assert calls >= 2000 // 7, "COUNT 7 should take many calls"
    assert seen == sorted(seen), "documented: SCAN returns keys in sorted order"


def test_a_long_scan_keeps_another_clients_cursor(module_server, r):
    # 110,000 keys 10 at a time: 11,000 SCANs, more than the 10,000 cursors the server keeps;
    # each call used to take a slot of its own and push out the oldest cursor, A's.
    expected = [f"k{i:06d}".encode() for i in range(110_000)]
    for start in range(0, len(expected), 10_000):
        r.mset({key: "v" for key in expected[start:start + 10_000]})
    with RespConn(module_server.port) as a:
        cursor, seen = a.call("SCAN", "0", "COUNT", "10")
        b_seen, b_calls = scan_all(r, count=10)
        assert len(b_seen) == len(expected) and b_calls > 10_000  # B's scan was that long
        while cursor != b"0":
            reply = a.call("SCAN", cursor, "COUNT", "5000")
            assert not isinstance(reply, RespError), reply
            cursor, page = reply
            seen += page
    assert seen == expected  # every key once, in order
    r.flushall()


def test_scan_with_concurrent_inserts_and_deletes(module_server, r):
    stable = {f"stable:{i:04d}".encode() for i in range(600)}
    r.mset({k: b"s" for k in stable})
    r.mset({f"churn:{i:04d}": "c" for i in range(0, 600, 2)})
    stop = threading.Event()
    background_ops = [0]

    def churn(client, rng):
        key = f"churn:{rng.randrange(600):04d}"
        if rng.random() < 0.5:
            client.set(key, "c")
        else:
            client.delete(key)
        # Keys sorting before, between and after the stable ones.
        client.set(f"a-new:{rng.randrange(1000)}", "n")
        client.set(f"stable:{rng.randrange(600):04d}-between", "n")
        client.set(f"zz-new:{rng.randrange(1000)}", "n")

    def background():
        client = module_server.client()
        rng = random.Random(7)
        deadline = time.monotonic() + 30
        while not stop.is_set() and background_ops[0] < 20000 and time.monotonic() < deadline:
            churn(client, rng)
            background_ops[0] += 1
        client.close()

    thread = threading.Thread(target=background)
    thread.start()
    seen = []
    try:
        rng = random.Random(8)
        cursor, calls = 0, 0
        while True:
            cursor, keys = r.scan(cursor, count=7)
            seen.extend(keys)
            calls += 1
            assert calls < 10000, "SCAN did not terminate"
            if cursor == 0:
                break
            # Changes between two calls, also right at the cursor: a key sorting just after
            # the last one returned, and a returned key deleted and written again.
            churn(r, rng)
            if keys:
                r.set(keys[-1] + b"\x00after", "n")
                if keys[0].startswith(b"churn:"):
                    r.delete(keys[0])
                    r.set(keys[0], "again")
    finally:
        stop.set()
        thread.join(timeout=40)
    assert not thread.is_alive()
    assert len(seen) == len(set(seen)), "SCAN returned a key twice"
    missing = stable - set(seen)
    assert not missing, f"{len(missing)} stable keys never returned, e.g. {sorted(missing)[:5]}"
    for key in seen:
        assert key.startswith((b"stable:", b"churn:", b"a-new:", b"zz-new:")), key


def test_scan_match_and_scan_iter(module_server, r):
    users = {f"user:{i}".encode() for i in range(150)}
    r.mset({k: "u" for k in users})
    r.mset({f"order:{i}": "o" for i in range(150)})
    seen, _ = scan_all(r, count=10, match="user:*")
    assert sorted(seen) == sorted(users)
    assert set(r.scan_iter(match="user:1?", count=5)) == {f"user:{i}".encode() for i in range(10, 20)}
    assert len(list(r.scan_iter(count=1000))) == 300
    # redis-cli --scan is the same loop, done by redis-cli.
    out = module_server.cli("--scan", "--pattern", "order:*")
    assert sorted(out.split()) == sorted(f"order:{i}" for i in range(150))


def test_scan_errors(raw):
    assert_error(raw.call("SCAN", "abc"), "ERR invalid cursor")
    assert_error(raw.call("SCAN", "12345"), "ERR invalid cursor")  # never issued
    assert_error(raw.call("SCAN", "0", "COUNT", "0"), "ERR syntax error")
    assert_error(raw.call("SCAN", "0", "COUNT", "x"), "ERR value is not an integer or out of range")
    assert_error(raw.call("SCAN", "0", "MATCH"), "ERR syntax error")
    assert_error(raw.call("SCAN", "0", "BOGUS", "1"), "ERR syntax error")


# ---- server ----

def test_info(module_server, r):
    r.mset({f"i{n}": "v" for n in range(7)})
    text = module_server.cli("info")
    assert "redis_version:" in text
    assert "role:master" in text
    assert "db0:keys=7" in text
    info = r.info()
    assert info["role"] == "master"
    assert info["db0"]["keys"] == 7
    assert "redis_version" in info


def test_info_section_filter(module_server):
    replication = module_server.cli("info", "replication")
    assert "role:master" in replication
    assert "redis_version" not in replication
    assert "# Server" not in replication
    server = module_server.cli("info", "server")
    assert "redis_version:" in server
    assert "role:" not in server
    both = module_server.cli("info", "server", "clients")
    assert "redis_version:" in both and "connected_clients:" in both and "role:" not in both


def test_info_is_one_bulk_string(raw):
    reply = raw.call("INFO")
    assert isinstance(reply, bytes)
    assert b"redis_version:" in reply and b"\r\n" in reply


def test_role(raw):
    reply = raw.call("ROLE")
    assert isinstance(reply, list) and len(reply) == 3
    assert reply[0] == b"master"
    assert isinstance(reply[1], int) and reply[1] >= 0
    assert reply[2] == []


def test_command_introspection(raw):
    count = raw.call("COMMAND", "COUNT")
    assert isinstance(count, int) and count >= 30
    names = raw.call("COMMAND", "LIST")
    assert len(names) == count and b"get" in names and b"scan" in names
    everything = raw.call("COMMAND")
    assert len(everything) == count
    docs = raw.call("COMMAND", "DOCS")
    assert isinstance(docs, list)
    info = raw.call("COMMAND", "INFO", "get", "nosuchcommand")
    assert info[1] is None
    get = info[0]
    assert get[0] == b"get" and get[1] == 2
    assert b"readonly" in [flag.encode() if isinstance(flag, str) else flag for flag in get[2]]
    assert get[3:6] == [1, 1, 1]


def test_config_get(raw, module_server):
    assert raw.call("CONFIG", "GET", "save") == [b"save", b""]
    assert raw.call("CONFIG", "GET", "appendonly") == [b"appendonly", b"yes"]
    assert raw.call("CONFIG", "GET", "appendfsync") == [b"appendfsync", b"always"]
    assert raw.call("CONFIG", "GET", "port") == [b"port", str(module_server.port).encode()]
    assert raw.call("CONFIG", "GET", "nosuchparameter") == []
    assert_error(raw.call("CONFIG", "SET", "save", ""), "ERR CONFIG set is not supported")


def test_client_commands(module_server, raw):
    client_id = raw.call("CLIENT", "ID")
    assert isinstance(client_id, int) and client_id > 0
    assert raw.call("CLIENT", "GETNAME") is None
    assert raw.call("CLIENT", "SETNAME", "worker-1") == "OK"
    assert raw.call("CLIENT", "GETNAME") == b"worker-1"
    assert_error(raw.call("CLIENT", "SETNAME", "has space"), "ERR Client names cannot contain")
    assert raw.call("CLIENT", "GETNAME") == b"worker-1"
    assert raw.call("CLIENT", "SETINFO", "LIB-NAME", "mylib") == "OK"
    assert raw.call("CLIENT", "SETINFO", "LIB-VER", "1.2.3") == "OK"
    assert_error(raw.call("CLIENT", "SETINFO", "COLOR", "red"), "ERR Unrecognized option")
    with RespConn(module_server.port) as other:
        other_id = other.call("CLIENT", "ID")
        assert other_id != client_id
        listing = raw.call("CLIENT", "LIST").decode()
        # The filters of Redis 7.0: by ID (several), by TYPE (every client here is normal).
        by_id = raw.call("CLIENT", "LIST", "ID", str(other_id), "999999").decode()
        assert by_id.startswith(f"id={other_id} ") and by_id.count("\n") == 1, by_id
        assert raw.call("CLIENT", "LIST", "TYPE", "NORMAL").decode().count("\n") >= 2
        assert raw.call("CLIENT", "LIST", "TYPE", "replica") == b""
    lines = [line for line in listing.split("\n") if line]
    mine = [line for line in lines if line.startswith(f"id={client_id} ")]
    assert len(mine) == 1, listing
    assert " name=worker-1 " in mine[0] and " lib-name=mylib " in mine[0], mine[0]
    assert " lib-ver=1.2.3" in mine[0]
    assert any(line.startswith(f"id={other_id} ") for line in lines), listing
    assert_error(raw.call("CLIENT", "NOSUCH"), "ERR unknown subcommand")


def test_redis_py_client_name_at_connect(module_server):
    client = module_server.client(client_name="x")
    assert client.client_getname() in ("x", b"x")
    assert client.ping() is True
    client.close()


def test_hello(raw):
    assert_error(raw.call("HELLO", "3"), "NOPROTO")
    reply = raw.call("HELLO", "2")
    assert isinstance(reply, list) and len(reply) % 2 == 0
    fields = dict(zip(reply[::2], reply[1::2]))
    assert fields[b"proto"] == 2
    assert fields[b"role"] == b"master"
    assert isinstance(fields[b"id"], int)
    # The Redis version INFO claims too: clients that read HELLO's gate features on it.
    info = raw.call("INFO", "server").decode()
    assert f"redis_version:{fields[b'version'].decode()}\r\n" in info, (fields, info)
    assert raw.call("PING") == "PONG", "the connection still speaks RESP2 after HELLO"
    reply = raw.call("HELLO", "2", "SETNAME", "hello-name")
    assert isinstance(reply, list)
    assert raw.call("CLIENT", "GETNAME") == b"hello-name"


# ---- errors ----

def test_unknown_command_text(raw):
    reply = raw.call("foo", "a", "b")
    assert_error(reply, "ERR unknown command 'foo', with args beginning with: 'a' 'b'")
    reply = raw.call("FOOBAR")
    assert_error(reply, "ERR unknown command 'FOOBAR', with args beginning with:")
    assert raw.call("PING") == "PONG", "an unknown command does not close the connection"


def test_wrong_arity_text(raw):
    assert str(raw.call("GET")) == "ERR wrong number of arguments for 'get' command"
    assert str(raw.call("get", "a", "b")) == "ERR wrong number of arguments for 'get' command"
    assert str(raw.call("SET", "a")) == "ERR wrong number of arguments for 'set' command"
    assert str(raw.call("DEL")) == "ERR wrong number of arguments for 'del' command"


def test_key_length_limit(raw, r):
    key511 = b"k" * 511
    key512 = b"k" * 512
    assert raw.call("SET", key511, "ok") == "OK"
    assert r.get(key511) == b"ok"
    reply = raw.call("SET", key512, "v")
    assert_error(reply, "ERR")
    assert "511" in str(reply), reply
    assert_error(raw.call("MSET", "fine", "1", key512, "v"), "ERR")
    assert r.exists("fine") == 0, "MSET with one bad key must store nothing"
    assert_error(raw.call("INCR", key512), "ERR")
    assert_error(raw.call("APPEND", key512, "x"), "ERR")
    assert raw.call("GET", key512) is None
    assert raw.call("EXISTS", key512) == 0
    assert_error(raw.call("SET", "", "v"), "ERR")
    assert r.dbsize() == 1


def test_binary_safe_values_and_keys(r):
    every_byte = bytes(range(256))
    values = {
        b"bin:all": every_byte * 3,
        b"bin:crlf": b"line1\r\nline2\r\n",
        b"bin:nul": b"\x00",
        b"bin:\r\nkey\x00": b"key with CRLF and NUL",
        b"bin:resp": b"*1\r\n$4\r\nPING\r\n",
    }
    r.mset(values)
    for key, value in values.items():
        assert r.get(key) == value
        assert r.strlen(key) == len(value)
    assert r.append(b"bin:nul", b"\x00\xff") == 3
    assert r.get(b"bin:nul") == b"\x00\x00\xff"


def test_binary_value_via_redis_cli(module_server, r, tmp_path):
    payload = bytes(range(256)) + b"\r\n\x00tail"
    module_server.cli("-x", "set", "clibin", input=payload)
    assert r.get("clibin") == payload


def test_five_mib_value_round_trip(r):
    rng = random.Random(5)
    value = rng.randbytes(5 * 1024 * 1024)
    assert r.set("big", value) is True
    assert r.get("big") == value
    assert r.strlen("big") == len(value)
    assert r.getdel("big") == value


def test_pipeline_of_1000_mixed_commands(r):
    pipe = r.pipeline(transaction=False)
    expected = []
    for i in range(250):
        pipe.set(f"p{i}", f"v{i}")
        expected.append(True)
        pipe.get(f"p{i}")
        expected.append(f"v{i}".encode())
        pipe.incr("pcount")
        expected.append(i + 1)
        pipe.append(f"p{i}", "!")
        expected.append(len(f"v{i}!"))
    results = pipe.execute()
    assert len(results) == 1000
    assert results == expected
    assert r.get("pcount") == b"250"
    assert r.get("p7") == b"v7!"


def test_pipeline_with_errors_keeps_order(r):
    pipe = r.pipeline(transaction=False)
    pipe.set("x", "notanumber")
    pipe.incr("x")
    pipe.get("x")
    pipe.set("y", "1")
    pipe.incr("y")
    results = pipe.execute(raise_on_error=False)
    assert results[0] is True
    assert isinstance(results[1], redis.ResponseError)
    assert "not an integer" in str(results[1])
    assert results[2:] == [b"notanumber", True, 2]


def test_decrby_int64_min_error_text(raw, r):
    # Redis 7 (checked against redis-server 7.0.15) refuses to negate LLONG_MIN with this text;
    # COMMANDS.md promises Redis 7 error texts.
    assert str(raw.call("DECRBY", "n", "-9223372036854775808")) == "ERR decrement would overflow"
    assert r.exists("n") == 0


def test_replfailover_is_refused_by_a_standalone_server(raw):
    # It would fence writes for good: a standalone server has no replica to hand over to.
    assert_error(raw.call("REPLFAILOVER", "somebody"),
                 "ERR REPLFAILOVER: replication is disabled on this server")
    assert raw.call("SET", "after-replfailover", "1") == "OK"


def test_hello_setname_checks_the_name_as_client_setname_does(raw):
    # A newline in a name would forge a line of CLIENT LIST.
    assert_error(raw.call("HELLO", "2", "SETNAME", "evil\nid=999 name=fake"),
                 "ERR Client names cannot contain spaces, newlines or special characters.")
    assert_error(raw.call("HELLO", "2", "SETNAME", "a b"), "ERR Client names cannot contain")
    assert raw.call("CLIENT", "GETNAME") is None
    assert isinstance(raw.call("HELLO", "2", "SETNAME", "good-name"), list)
    assert raw.call("CLIENT", "GETNAME") == b"good-name"


def test_memory_usage_estimates_each_pair(module_server, r):
    r.set("small", "v")
    r.set("large", "x" * 100_000)
    small, large = r.memory_usage("small"), r.memory_usage("large", samples=5)
    assert len("small") + len("v") < small < 64, small  # the pair and LMDB's node overhead
    assert 100_000 < large <= 100_000 + 2 * 4096, large  # the value in whole pages
    assert r.memory_usage("missing") is None
    # redis-cli --memkeys warned for every key and counted 0 bytes without MEMORY USAGE.
    assert f"2 strings with {small + large} bytes" in module_server.cli("--memkeys")


def test_info_memory_fields_libraries_check(r):
    memory = r.info("memory")
    assert memory["maxmemory_policy"] == "noeviction"  # BullMQ and Sidekiq warn otherwise
    assert memory["used_memory_peak"] >= memory["used_memory"] > 0
    assert memory["used_memory_peak_human"].endswith("M")
