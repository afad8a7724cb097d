"""Bad input over raw sockets: malformed RESP, absurd lengths, garbage, half-sent frames, huge
pipelines, query buffer and client limits. Each bad connection must get "-ERR Protocol error..."
and then be closed by the server, while other clients and the stored data are unaffected."""
import random
import select
import socket
import struct
import time

import pytest

from conftest import RespConn, RespError, encode_command, keyspace_digest, read_until_closed

MALFORMED = {
    "multibulk_count_not_a_number": b"*abc\r\n",
    "argument_not_a_bulk_string": b"*2\r\n$3\r\nGET\r\n:5\r\n",
    "negative_bulk_length": b"*1\r\n$-5\r\n",
    "negative_multibulk_count": b"*-5\r\n",
    "oversized_multibulk_count": b"*99999999999\r\n",
    "oversized_bulk_length": b"*1\r\n$99999999999\r\n",
    "bulk_length_overflowing_int64": b"*1\r\n$99999999999999999999999\r\n",
    "bulk_length_not_a_number": b"*1\r\n$x\r\n",
    "missing_crlf_after_bulk": b"*1\r\n$4\r\nPINGxx",
    "binary_garbage_with_nul": b"\x00\x01\x02\xff\xfe\x1b[0m\x00garbage\r\n",
    "tls_client_hello": bytes.fromhex("160301020001000200030300") + b"\x00" * 40,
    "control_chars_inline": b"GET \x01\x02\x03\r\n",
    "inline_line_over_64k": b"GET " + b"a" * 70000 + b"\r\n",
    "header_line_over_64k": b"*1\r\n$" + b"1" * 70000,
    "good_command_then_garbage": b"*1\r\n$4\r\nPING\r\n\x00\x01garbage\r\n",
}


@pytest.fixture(scope="module")
def seeded(module_server):
    client = module_server.client()
    client.flushall()
    rng = random.Random(11)
    client.mset({f"seed:{i:04d}": rng.randbytes(rng.randrange(0, 300)) for i in range(500)})
    digest = keyspace_digest(client)
    client.close()
    return digest


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=5)


@pytest.mark.parametrize("payload", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_input_gets_protocol_error_and_close(module_server, seeded, payload):
    with connect(module_server.port) as bystander, connect(module_server.port) as s:
        s.sendall(payload)
        started = time.monotonic()
        data, closed = read_until_closed(s, timeout=5)
        elapsed = time.monotonic() - started
        if payload.startswith(b"*1\r\n$4\r\nPING\r\n"):
            assert data.startswith(b"+PONG\r\n"), data
            data = data[len(b"+PONG\r\n"):]
        assert data.startswith(b"-ERR Protocol error"), f"reply {data!r}"
        assert data.endswith(b"\r\n") and data.count(b"\r\n") == 1, f"one error line: {data!r}"
        assert closed, f"server did not close within 5 s (after {elapsed:.1f} s): {data!r}"
        bystander.sendall(b"PING\r\n")
        assert bystander.recv(64) == b"+PONG\r\n"


def test_nothing_stored_from_a_malformed_request(module_server, seeded):
    with connect(module_server.port) as s:
        # A complete SET followed, in the same packet, by a broken one: the first is executed,
        # the second never is.
        s.sendall(b"*3\r\n$3\r\nSET\r\n$4\r\ngood\r\n$1\r\n1\r\n"
                  b"*3\r\n$3\r\nSET\r\n$3\r\nbad\r\n$-1\r\n")
        data, closed = read_until_closed(s, timeout=5)
    assert data.startswith(b"+OK\r\n-ERR Protocol error"), data
    assert closed
    client = module_server.client()
    assert client.get("good") == b"1"
    assert client.exists("bad") == 0
    client.delete("good")


def test_unfinished_frame_times_out(make_server):
    server = make_server(args=["--frame-timeout-ms", "500"])
    with connect(server.port) as s:
        s.sendall(b"*2\r\n$3\r\nGET\r\n$3\r\nab")
        started = time.monotonic()
        data, closed = read_until_closed(s, timeout=6)
        elapsed = time.monotonic() - started
    assert data.startswith(b"-ERR Protocol error"), data
    assert closed, "the server kept a half-sent frame open"
    assert 0.4 <= elapsed <= 3.0, f"closed after {elapsed:.2f} s with frame_timeout_ms 500"
    # An idle connection (no partial frame) is not cut off by the frame timeout.
    with connect(server.port) as idle:
        time.sleep(1.2)
        idle.sendall(b"PING\r\n")
        assert idle.recv(64) == b"+PONG\r\n"
    # A frame that arrives slowly but completes within the timeout is fine.
    with connect(server.port) as slow:
        for byte in b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n":
            slow.sendall(bytes([byte]))
            time.sleep(0.01)
        assert slow.recv(64) == b"$2\r\nhi\r\n"


def test_quit_in_a_pipeline(module_server, seeded):
    with connect(module_server.port) as s:
        s.sendall(b"PING\r\nQUIT\r\nSET after-quit 1\r\nPING\r\n")
        data, closed = read_until_closed(s, timeout=5)
    assert data == b"+PONG\r\n+OK\r\n", data
    assert closed
    assert module_server.client().exists("after-quit") == 0


def test_immediate_errors_keep_their_place_behind_queued_writes(module_server, seeded):
    # SET is queued for the group commit; the INCRBY and SET errors are known at once. Replies
    # must still come back in request order, or a client would pair them with the wrong command.
    with RespConn(module_server.port) as conn:
        conn.send(b"SET order:a 1\r\nINCRBY order:a x\r\nSET order:b 2 EX 5\r\n"
                  b"SET order:c 3\r\nSET\r\nGET order:c\r\n")
        replies = [conn.read_reply() for _ in range(6)]
        assert conn.call("DEL", "order:a", "order:c") == 2  # the module's key space stays seeded
    assert replies[0] == "OK"
    assert isinstance(replies[1], RespError) and "not an integer" in str(replies[1])
    assert isinstance(replies[2], RespError) and "not supported" in str(replies[2])
    assert replies[3] == "OK"
    assert isinstance(replies[4], RespError) and "wrong number of arguments" in str(replies[4])
    assert replies[5] == b"3"


def test_pipeline_of_10k_pings_in_one_send(module_server, seeded):
    count = 10000
    expected = b"+PONG\r\n" * count
    with connect(module_server.port) as s:
        s.sendall(b"*1\r\n$4\r\nPING\r\n" * (count // 2) + b"PING\r\n" * (count // 2))
        got, _ = read_until_closed(s, timeout=20, limit=len(expected))
    assert len(got) == len(expected), f"{len(got) // 7} of {count} replies"
    assert got == expected


def test_pipeline_of_writes_and_reads_in_one_send(module_server, seeded):
    requests = []
    for i in range(2000):
        requests.append(b"*3\r\n$3\r\nSET\r\n$%d\r\npipe:%d\r\n$%d\r\n%d\r\n"
                        % (len(b"pipe:%d" % i), i, len(b"%d" % i), i))
        requests.append(b"*2\r\n$3\r\nGET\r\n$%d\r\npipe:%d\r\n" % (len(b"pipe:%d" % i), i))
    expected = b"".join(b"+OK\r\n$%d\r\n%d\r\n" % (len(b"%d" % i), i) for i in range(2000))
    with connect(module_server.port) as s:
        s.sendall(b"".join(requests))
        got, _ = read_until_closed(s, timeout=30, limit=len(expected))
    assert got == expected
    client = module_server.client()
    client.delete(*[f"pipe:{i}" for i in range(2000)])


def test_client_that_never_reads_does_not_block_others(module_server, seeded):
    with connect(module_server.port) as greedy:
        greedy.settimeout(0.2)
        try:
            for _ in range(200):  # bounded: up to 200 x 70 KB of replies nobody reads
                greedy.sendall(b"PING\r\n" * 10000)
        except (socket.timeout, BlockingIOError):
            pass
        client = module_server.client()
        started = time.monotonic()
        assert client.ping() is True
        assert time.monotonic() - started < 2


def random_garbage(rng):
    """Bytes that look partly like RESP: headers, lengths, read-only command names, CRLFs and
    random bytes, glued at random. Never a write command, so the key space must not change."""
    pieces = [b"*", b"$", b"\r\n", b"\r", b"\n", b"-1", b"0", b"3", b"4", b"99999999999",
              b"-99", b"GET", b"PING", b"ECHO", b"EXISTS", b"seed:0001", b'"', b"'", b"\\x4",
              b" ", b"\x00", b"\xff", b"+OK", b":5"]
    out = b""
    for _ in range(rng.randrange(1, 40)):
        out += rng.choice(pieces) if rng.random() < 0.8 else rng.randbytes(rng.randrange(1, 8))
    return out


def test_random_garbage_never_hurts_the_server(module_server, seeded):
    rng = random.Random(2024)
    outcomes = {"closed with protocol error": 0, "answered": 0, "left waiting": 0}
    deadline = time.monotonic() + 40
    for _ in range(150):
        assert time.monotonic() < deadline, "garbage round took too long"
        payload = random_garbage(rng)
        with connect(module_server.port) as s:
            s.sendall(payload)
            data, closed = read_until_closed(s, timeout=0.1)
        if closed:
            assert data.endswith(b"\r\n"), (payload, data)
            last = data[:-2].rsplit(b"\r\n", 1)[-1]
            assert last.startswith(b"-ERR Protocol error"), (payload, data)
            outcomes["closed with protocol error"] += 1
        elif data:
            outcomes["answered"] += 1
        else:
            outcomes["left waiting"] += 1
    assert module_server.proc.poll() is None, module_server.logs()
    assert outcomes["closed with protocol error"] > 10, outcomes
    client = module_server.client()
    assert keyspace_digest(client) == seeded


def test_abrupt_disconnects_mid_request(module_server, seeded):
    # Connections reset (RST) half-way through a request, a big value, or a pipeline.
    partials = [b"*3\r\n$3\r\nSET\r\n$4\r\nrst1\r\n$100000\r\n" + b"x" * 50000,
                b"*2\r\n$3\r\nGET\r\n$3\r\nse",
                b"PING\r\n" * 5000 + b"PIN",
                b"*3\r\n$3\r\nSET\r\n$4\r\nrst2\r\n"]
    for i in range(100):
        s = connect(module_server.port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.sendall(partials[i % len(partials)])
        s.close()
    client = module_server.client()
    assert client.ping() is True
    assert client.exists("rst1", "rst2") == 0
    assert keyspace_digest(client) == seeded
    # Every one of those sessions is gone (the server notices asynchronously).
    deadline = time.monotonic() + 5
    while client.info("clients")["connected_clients"] > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.info("clients")["connected_clients"] == 1


def test_server_still_serves_and_data_intact(module_server, seeded):
    client = module_server.client()
    assert client.ping() is True
    assert keyspace_digest(client) == seeded


def test_query_buffer_limit(make_server):
    server = make_server(args=["--max-query-buffer-bytes", "1mb", "--max-value-bytes", "512kb"])
    # A 2 MiB bulk string that never ends (its length alone exceeds the limits).
    with connect(server.port) as s:
        s.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2097152\r\n")
        data, closed = send_until_error(s, b"x" * (2 << 20))
    assert data.startswith(b"-ERR Protocol error"), data
    assert closed
    # Arguments each within max_value_bytes whose sum exceeds the query buffer limit.
    with connect(server.port) as s:
        s.sendall(b"*10\r\n$3\r\nSET\r\n")
        chunk = b"$262144\r\n" + b"y" * 262144 + b"\r\n"
        data, closed = send_until_error(s, chunk * 8)
    assert data.startswith(b"-ERR Protocol error"), data
    assert b"query buffer" in data, data
    assert closed
    client = server.client()
    assert client.ping() is True
    assert client.dbsize() == 0
    # A value right at max_value_bytes still fits; one byte more is refused with an error reply
    # (not a protocol error: the connection stays usable), by SET and by APPEND.
    client.set("max", b"z" * (512 * 1024))
    assert client.strlen("max") == 512 * 1024
    with RespConn(server.port) as conn:
        reply = conn.call("SET", "over", b"z" * (512 * 1024 + 1))
        assert isinstance(reply, RespError), reply
        assert str(reply).startswith("ERR string exceeds maximum allowed size"), reply
        reply = conn.call("APPEND", "max", "z")
        assert str(reply).startswith("ERR string exceeds maximum allowed size"), reply
        assert conn.call("PING") == "PONG"
    assert client.exists("over") == 0
    assert client.strlen("max") == 512 * 1024


def test_the_smallest_buffers_allowed_still_carry_the_largest_value(make_server):
    # Buffers exactly max_value_bytes large were accepted, and then no command could carry a
    # value that large: its key and framing did not fit. The lowest buffers allowed must.
    value_limit = 1024 * 1024 - 65 * 1024
    server = make_server(args=["--max-value-bytes", str(value_limit),
                               "--max-query-buffer-bytes", "1mb",
                               "--client-output-buffer-limit-bytes", "1mb"])
    key = "k" * 511  # the longest key
    value = random.Random(7).randbytes(value_limit)
    with RespConn(server.port) as conn:
        # Pipelined behind one another, so the next command's bytes share the buffer.
        conn.sock.sendall(encode_command("SET", key, value) + encode_command("SET", "k2", value) +
                          encode_command("GET", key) + encode_command("GET", "k2"))
        assert conn.read_reply() == "OK"
        assert conn.read_reply() == "OK"
        assert conn.read_reply() == value
        assert conn.read_reply() == value
        assert conn.call("PING") == "PONG"


def send_until_error(s, payload, chunk=64 * 1024):
    """Sends payload in chunks, stopping as soon as the server replies or closes, then reads
    until closed. Returns (data, closed)."""
    s.setblocking(True)
    for start in range(0, len(payload), chunk):
        readable, _, _ = select.select([s], [], [], 0)
        if readable:
            break
        try:
            s.sendall(payload[start:start + chunk])
        except (BrokenPipeError, ConnectionResetError):
            break
    return read_until_closed(s, timeout=5)


def test_max_clients(make_server):
    server = make_server(args=["--max-clients", "5"])
    first = connect(server.port)
    conns = [first]
    try:
        # Wait until the start-up probe connection is gone, so exactly one client is counted.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            first.sendall(b"INFO clients\r\n")
            reply = first.recv(4096)
            if b"connected_clients:1\r\n" in reply:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"connected_clients never reached 1: {reply!r}")
        for _ in range(4):
            conn = connect(server.port)
            conn.sendall(b"PING\r\n")
            assert conn.recv(64) == b"+PONG\r\n"
            conns.append(conn)
        with connect(server.port) as sixth:
            data, closed = read_until_closed(sixth, timeout=5)
        assert data == b"-ERR max number of clients reached\r\n", data
        assert closed
        for conn in conns:  # the five are unaffected
            conn.sendall(b"PING\r\n")
            assert conn.recv(64) == b"+PONG\r\n"
        conns.pop().close()
        # Once one leaves, a new client gets in (the server notices the close asynchronously).
        deadline = time.monotonic() + 5
        while True:
            with connect(server.port) as again:
                again.sendall(b"PING\r\n")
                data, _ = read_until_closed(again, timeout=1, limit=7)
            if data == b"+PONG\r\n" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert data == b"+PONG\r\n", data
    finally:
        for conn in conns:
            conn.close()


# Pipelined reads run as runs, on the read pool once a run is long enough (src/server/session.cpp).
# The same pipeline must give the same replies, in order, with the pool and without it.
@pytest.mark.parametrize("read_threads", [0, 1])
def test_pipelined_read_runs_keep_order_and_see_earlier_writes(make_server, read_threads):
    server = make_server(args=["--read-threads", str(read_threads)])
    big = bytes(range(256)) * 800  # 200 KiB: thirty of them cross the soft output bound often
    requests, expected = [], []

    def send(*args, reply):
        requests.append(encode_command(*args))
        expected.append(reply)

    send("SET", "rr:a", "1", reply="OK")
    for _ in range(300):  # 8 KB, within the session's first 16 KiB read: a run cut at 256
        send("GET", "rr:a", reply=b"1")
    send("SET", "rr:big", big, reply="OK")
    for i in range(300):
        [lambda: send("GET", "rr:a", reply=b"1"),
         lambda: send("EXISTS", "rr:a", "rr:none", "rr:a", reply=2),
         lambda: send("STRLEN", "rr:big", reply=len(big)),
         lambda: send("TYPE", "rr:none", reply="none"),
         lambda: send("MGET", "rr:none", "rr:a", reply=[None, b"1"])][i % 5]()
    send("SET", "rr:a", "2", reply="OK")
    for _ in range(10):  # a run right behind a write sees it
        send("GET", "rr:a", reply=b"2")
    send("GET", reply=RespError("ERR wrong number of arguments for 'get' command"))
    send("GET", "rr:a", reply=b"2")
    send("NOSUCH", "rr:a", reply=RespError(
        "ERR unknown command 'NOSUCH', with args beginning with: 'rr:a' "))
    for _ in range(30):
        send("GET", "rr:big", reply=big)
    send("DEL", "rr:big", reply=1)
    for _ in range(5):
        send("GET", "rr:big", reply=None)
    with RespConn(server.port, timeout=20) as conn:
        conn.send(b"".join(requests) + b"*1\r\n$3\r\nGET\r\n" * 8 + b"*-5\r\n")
        got = [conn.read_reply() for _ in expected]
        assert got == expected
        # The reads parsed before the malformed frame are answered, then the error, then close.
        assert [conn.read_reply() for _ in range(8)] == [
            RespError("ERR wrong number of arguments for 'get' command")] * 8
        error = conn.read_reply()
        assert isinstance(error, RespError) and str(error).startswith("ERR Protocol error")
        with pytest.raises(ConnectionError):
            conn.read_reply()
    client = server.client()
    assert client.get("rr:a") == b"2"
    pooled = client.info("stats")["kvstore_pooled_read_commands"]
    if read_threads == 0:
        assert pooled == 0
    else:  # all but runs shorter than 4 (the GETs right behind the writes may be cut short)
        assert pooled > 600, pooled


@pytest.mark.parametrize("read_threads", [0, 1])
def test_output_limit_closes_within_a_read_run(make_server, read_threads):
    limit = 1 << 20
    server = make_server(args=["--read-threads", str(read_threads), "--max-value-bytes",
                               str(limit - (65 << 10)), "--client-output-buffer-limit-bytes",
                               str(limit)])
    server.client().set("big", b"x" * (600 << 10))
    with connect(server.port) as s:
        # Each MGET's reply (1.2 MB) alone passes the limit: the connection closes before it.
        s.sendall(encode_command("MGET", "big", "big") * 6)
        data, closed = read_until_closed(s, timeout=10)
    assert closed
    assert data == b"", f"{len(data)} bytes sent past the limit"
    assert "output buffer limit exceeded" in server.logs()


@pytest.mark.parametrize("read_threads", [0, 1])
def test_auth_in_the_middle_of_a_read_run(make_server, read_threads):
    server = make_server(args=["--read-threads", str(read_threads)],
                         env={"KVSTORE_PASSWORD": "s3cret"})
    with RespConn(server.port) as conn:
        conn.send(encode_command("GET", "k") * 6 + encode_command("AUTH", "s3cret")
                  + encode_command("EXISTS", "k") * 6)
        replies = [conn.read_reply() for _ in range(13)]
    assert replies[:6] == [RespError("NOAUTH Authentication required.")] * 6
    assert replies[6:] == ["OK"] + [0] * 6
