"""A client blocked in WAIT, as redis-server 7.0 treats one: it is freed as soon as it closes its
connection (it held a max_clients slot and its memory forever before), INFO counts it in
blocked_clients, what it pipelines behind WAIT runs after WAIT's reply and in order, and a huge
timeout blocks instead of returning at once.

A standalone server has no replica, so `WAIT 1 0` there blocks forever, as on a Redis master
without replicas.
"""
import os
import select
import signal
import socket
import struct
import time

from conftest import RespConn, RespError, encode_command, read_until_closed


def wait_until(predicate, timeout, what):
    """Polls predicate until it returns a true value (returned) or timeout passes (fails)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {last!r}")


def blocked_in_wait(port, timeout_ms="0", replicas="1"):
    """A raw connection that sent WAIT and got no reply within 0.3 s: it is blocked."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(encode_command("WAIT", replicas, timeout_ms))
    ready, _, _ = select.select([sock], [], [], 0.3)
    assert not ready, f"WAIT {replicas} {timeout_ms} answered at once: {sock.recv(100)!r}"
    return sock


def addr_of(sock):
    host, port = sock.getsockname()
    return f"{host}:{port}"


def listed_addrs(client):
    return {entry["addr"] for entry in client.client_list()}


def clients_info(client):
    info = client.info("clients")
    return info["connected_clients"], info["blocked_clients"]


def test_a_client_that_closes_while_blocked_in_wait_is_freed_at_once(server):
    observer = server.client()
    for close in ("fin", "reset"):
        sock = blocked_in_wait(server.port)
        addr = addr_of(sock)
        assert addr in listed_addrs(observer)
        if close == "reset":  # SO_LINGER 0: close() sends RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        wait_until(lambda: addr not in listed_addrs(observer), 5,
                   f"CLIENT LIST to drop {addr} after a {close} while blocked in WAIT 1 0")
        assert clients_info(observer) == (1, 0), f"after a {close}"
    observer.close()


def test_clients_that_closed_while_blocked_give_their_max_clients_slots_back(make_server):
    server = make_server(args=["--max-clients", "3"])
    observer = server.client()
    observer.ping()
    for round_ in range(3):
        blocked = [blocked_in_wait(server.port) for _ in range(2)]
        for sock in blocked:
            sock.close()
        wait_until(lambda: clients_info(observer)[0] == 1, 5,
                   f"round {round_}: connected_clients back to 1 (only the observer)")
    observer.close()


def test_blocked_clients_counts_the_clients_blocked_in_wait(server):
    observer = server.client()
    assert clients_info(observer) == (1, 0)
    forever = blocked_in_wait(server.port)
    with RespConn(server.port) as timed:
        timed.send(encode_command("WAIT", "1", "1500"))
        wait_until(lambda: clients_info(observer)[1] == 2, 5, "blocked_clients to reach 2")
        # CLIENT LIST shows them as Redis does: flags=b, cmd=wait, and each one's own fd.
        listed = [c for c in observer.client_list() if c["cmd"] == "wait"]
        assert len(listed) == 2 and all(c["flags"] == "b" for c in listed), listed
        assert len({c["fd"] for c in listed}) == 2 and all(int(c["fd"]) > 2 for c in listed)
        assert timed.read_reply() == 0, "WAIT 1 1500 without replicas: none acknowledged"
        assert clients_info(observer) == (3, 1)
    forever.close()
    wait_until(lambda: clients_info(observer) == (1, 0), 5,
               "connected_clients 1 and blocked_clients 0 once the last blocked client closed")
    observer.close()


def test_a_wait_abandoned_before_its_timeout_fires_harmlessly(server):
    # The waiter's timer fires after its session has gone (an ASan build reports a use after
    # free here, and the fixture fails on sanitizer reports).
    for _ in range(5):
        blocked_in_wait(server.port, timeout_ms="400").close()
    time.sleep(0.6)
    with RespConn(server.port) as conn:
        assert conn.call("PING") == "PONG"
        assert conn.call("WAIT", "1", "50") == 0


def test_replies_before_wait_go_out_and_commands_behind_it_run_after_it_in_order(server):
    with RespConn(server.port) as conn:
        started = time.monotonic()
        # One packet: the SET's reply goes out before the client blocks (as Redis sends it); the
        # PING and GET are read while WAIT blocks and answered after it.
        conn.send(encode_command("SET", "a", "1") + encode_command("WAIT", "1", "1000") +
                  encode_command("PING") + encode_command("GET", "a"))
        assert conn.read_reply() == "OK"
        assert time.monotonic() - started < 0.8, "the SET's reply waited for WAIT"
        # More commands while WAIT still blocks.
        conn.send(encode_command("INCR", "n") + encode_command("INCR", "n"))
        assert conn.read_reply() == 0
        assert time.monotonic() - started >= 0.9, "WAIT 1 1000 returned early"
        assert [conn.read_reply() for _ in range(4)] == ["PONG", b"1", 1, 2]
        # A pipeline behind a WAIT that fills more than one read, sent while it blocks.
        conn.send(encode_command("WAIT", "1", "300"))
        time.sleep(0.05)
        conn.send(b"".join(encode_command("INCR", "m") for _ in range(5000)))
        assert conn.read_reply() == 0
        assert [conn.read_reply() for _ in range(5000)] == list(range(1, 5001))
        assert conn.call("PING") == "PONG"


def test_a_huge_wait_timeout_blocks_and_a_negative_one_is_refused(server):
    observer = server.client()
    # 10**13 ms and more do not fit in the timer's nanoseconds: they fired at once.
    for timeout in ("9223372036854775807", "10000000000000"):
        sock = blocked_in_wait(server.port, timeout_ms=timeout)
        ready, _, _ = select.select([sock], [], [], 1.0)
        assert not ready, f"WAIT 1 {timeout} answered within 1 s: {sock.recv(100)!r}"
        assert clients_info(observer) == (2, 1)
        sock.close()
        wait_until(lambda: clients_info(observer) == (1, 0), 5, "the blocked client to go")
    with RespConn(server.port) as conn:
        assert conn.call("WAIT", "1", "-1") == RespError("ERR timeout is negative")
        assert conn.call("WAIT", "1", "9223372036854775808") == RespError(
            "ERR timeout is not an integer or out of range")
        assert conn.call("WAIT", "0", "9223372036854775807") == 0, "0 replicas: satisfied"
    observer.close()


def test_the_query_buffer_limit_applies_while_blocked(make_server):
    server = make_server(args=["--max-value-bytes", "1024", "--max-query-buffer-bytes", "1MiB"])
    observer = server.client()
    sock = blocked_in_wait(server.port)
    sock.settimeout(10)
    try:
        sock.sendall(b"PING\r\n" * (2 * 1024 * 1024 // 6))  # 2 MiB of pipelined PINGs
    except socket.timeout:
        raise AssertionError("the server stopped reading from a client blocked in WAIT")
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed while we were still sending: what the test waits for below
    data, closed = read_until_closed(sock, timeout=10)
    sock.close()
    assert closed, f"still open after passing the query buffer limit; got {data[:200]!r}"
    assert data == b"-ERR Protocol error: query buffer limit exceeded (1048576 bytes)\r\n"
    wait_until(lambda: clients_info(observer) == (1, 0), 5, "the closed client to go")
    observer.close()


def test_sigterm_answers_a_client_blocked_in_wait_and_exits(server):
    sock = blocked_in_wait(server.port)
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 8, "shutdown waited for the blocked client's timeout"
    data, closed = read_until_closed(sock, timeout=5)
    sock.close()
    assert (data, closed) == (b":0\r\n", True)


def test_wait_for_more_replicas_than_acknowledge_then_close(make_cluster):
    cluster = make_cluster(size=2)
    cluster.start_all()
    cluster.wait_converged()
    master = cluster.client(0)
    assert master.set("k", "v")
    sock = blocked_in_wait(cluster.port(0), replicas="2")
    assert clients_info(master)[1] == 1
    sock.close()
    wait_until(lambda: clients_info(master) == (1, 0), 5, "the blocked client to go")
    # The master still waits and counts as before.
    with RespConn(cluster.port(0)) as conn:
        assert conn.call("SET", "k", "w") == "OK"
        assert conn.call("WAIT", "1", "0") == 1
        assert conn.call("WAIT", "2", "200") == 1
    master.close()


def test_blocked_clients_counts_a_sync_mode_write_waiting_for_its_replicas(make_cluster):
    cluster = make_cluster(size=2, extra_args=["--replication-mode", "sync",
                                               "--sync-replicas", "1",
                                               "--sync-timeout-ms", "1500"])
    cluster.start_all()
    cluster.wait_converged()
    # The replica freezes: it was heard from a moment ago, so a write waits sync_timeout_ms for
    # it (a replica unheard for two heartbeats would get -NOREPLICAS at once).
    os.kill(cluster.pods[1].proc.pid, signal.SIGSTOP)
    try:
        observer = cluster.client(0)
        assert clients_info(observer) == (1, 0)
        with RespConn(cluster.port(0)) as conn:
            conn.send(encode_command("SET", "k", "v"))
            wait_until(lambda: clients_info(observer)[1] == 1, 5, "blocked_clients to reach 1")
            reply = conn.read_reply()
            assert isinstance(reply, RespError) and str(reply).startswith("NOREPLICAS"), reply
            assert clients_info(observer) == (2, 0)
        observer.close()
    finally:
        os.kill(cluster.pods[1].proc.pid, signal.SIGCONT)
