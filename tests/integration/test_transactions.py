"""MULTI / EXEC / DISCARD / WATCH with the real server and redis-py (Debian's python3-redis), whose
default pipeline() is a MULTI ... EXEC transaction. Checks what a transaction promises: its
commands run together (nobody sees half of it), in order, with its reads seeing its writes; WATCH
makes EXEC fail when a watched key changed; a failed write rolls the whole EXEC back; an
acknowledged EXEC survives kill -9; a replica runs read-only transactions and refuses writes.
The exact reply texts are compared with a real redis-server in test_redis_compat.py."""
import threading
import time

import redis

from conftest import RespConn, RespError


def test_redis_py_pipeline_is_a_transaction(server):
    client = server.client()
    client.set("text", "x")
    pipe = client.pipeline()  # transaction=True: MULTI ... EXEC
    pipe.set("a", 1).incr("a").get("a").incr("text").mget("a", "text").delete("text")
    pipe.exists("text")
    replies = pipe.execute(raise_on_error=False)
    assert replies[:3] == [True, 2, b"2"]
    # A command's own error is its reply; the commands after it still run, as in Redis.
    assert isinstance(replies[3], redis.ResponseError) and "not an integer" in str(replies[3])
    assert replies[4:] == [[b"2", b"x"], 1, 0]
    assert client.get("a") == b"2" and client.exists("text") == 0


def test_what_kvstore_cannot_store_discards_the_whole_transaction(server):
    """An expiry, or a key LMDB cannot hold: redis-server would run the command, so running the
    rest of the transaction without it would half-apply what the application meant. It is
    refused while queuing, and EXEC writes nothing (it used to run the other writes and answer
    the refusal in EXEC's reply)."""
    refused = [("EXPIRE", "a", "10"), ("SET", "a", "2", "EX", "10"), ("SET", "a", "2", "px", "5"),
               ("SETEX", "a", "10", "v"), ("PSETEX", "a", "10", "v"), ("PEXPIREAT", "a", "1"),
               ("SET", "", "v"), ("INCR", "k" * 512), ("MSET", "ok", "1", "", "2"),
               ("APPEND", "", "x"), ("SETRANGE", "", "0", "x"), ("GETSET", "", "x")]
    with RespConn(server.port) as conn:
        for command in refused:
            assert conn.call("MULTI") == "OK"
            assert conn.call("SET", "a", "1") == "QUEUED"
            reply = conn.call(*command)
            assert isinstance(reply, RespError), (command, reply)
            assert "do not expire" in str(reply) or "keys are" in str(reply), (command, reply)
            reply = conn.call("EXEC")
            assert isinstance(reply, RespError) and str(reply).startswith("EXECABORT"), reply
            assert conn.call("EXISTS", "a", "ok") == 0, command
            # Outside a transaction: the same refusal, nothing written.
            assert isinstance(conn.call(*command), RespError), command
            assert conn.call("EXISTS", "a", "ok") == 0, command


def test_a_refused_command_discards_the_whole_transaction(server):
    with RespConn(server.port) as conn:
        assert conn.call("MULTI") == "OK"
        assert conn.call("SET", "a", "1") == "QUEUED"
        assert isinstance(conn.call("NOSUCHCOMMAND"), RespError)
        reply = conn.call("INFO")  # not a data command: refused inside MULTI, with the reason
        assert isinstance(reply, RespError) and "not allowed inside MULTI" in str(reply), reply
        reply = conn.call("EXEC")
        assert isinstance(reply, RespError) and str(reply).startswith("EXECABORT"), reply
        assert conn.call("EXISTS", "a") == 0
        # DISCARD drops the queue; the connection is usable afterwards.
        assert conn.call("MULTI") == "OK"
        assert conn.call("SET", "b", "1") == "QUEUED"
        assert conn.call("DISCARD") == "OK"
        assert conn.call("EXISTS", "b") == 0
        assert conn.call("SET", "c", "1") == "OK"


def test_no_client_sees_half_a_transaction(server):
    """One client moves 1 from x to y in transactions while others read both: x + y never
    changes, in a pipelined MGET nor in a read-only transaction."""
    server.client().mset({"x": 1000, "y": 0})
    stop = threading.Event()
    seen = []
    errors = []

    def read(transactional):
        client = server.client()
        try:
            while not stop.is_set() and len(seen) < 20000:
                if transactional:
                    x, y = client.pipeline().get("x").get("y").execute()
                else:
                    x, y = client.mget("x", "y")
                seen.append(int(x) + int(y))
        except Exception as e:  # reported below: a thread's exception would be lost
            errors.append(repr(e))

    readers = [threading.Thread(target=read, args=(t,)) for t in (False, True)]
    for reader in readers:
        reader.start()
    client = server.client()
    deadline = time.monotonic() + 20
    moves = 0
    while moves < 300 and time.monotonic() < deadline:
        assert client.pipeline().decr("x").incr("y").execute() == [999 - moves, moves + 1]
        moves += 1
    stop.set()
    for reader in readers:
        reader.join(timeout=20)
    assert not errors, errors
    assert moves == 300, f"only {moves} transactions in 20 s"
    assert seen and set(seen) == {1000}, f"sums seen: {sorted(set(seen))[:10]}"
    assert client.mget("x", "y") == [b"700", b"300"]


def test_watch_makes_concurrent_read_modify_write_safe(server):
    """The textbook optimistic lock: WATCH, read, MULTI, write, EXEC, retry on WatchError.
    Four clients add 1 each 50 times to one counter: no increment may be lost, and the
    conflicts must really have happened (some EXECs failed and were retried)."""
    server.client().set("counter", 0)
    conflicts = []
    errors = []

    def add(times):
        client = server.client()
        try:
            for _ in range(times):
                for attempt in range(1000):
                    with client.pipeline() as pipe:
                        try:
                            pipe.watch("counter")
                            value = int(pipe.get("counter"))
                            time.sleep(0.0005)  # widen the window for others to interfere
                            pipe.multi()
                            pipe.set("counter", value + 1)
                            pipe.execute()
                            break
                        except redis.WatchError:
                            conflicts.append(1)
                else:
                    errors.append("gave up after 1000 conflicts")
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=add, args=(50,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert int(server.client().get("counter")) == 200
    assert conflicts, "four clients never conflicted: WATCH was not exercised"


def test_watch_sees_deletes_creations_and_flushall(server):
    client = server.client()
    other = server.client()
    cases = [
        ("present then deleted", lambda: client.set("k", "v"), lambda: other.delete("k")),
        ("absent then created", lambda: client.delete("k"), lambda: other.set("k", "v")),
        ("flushed", lambda: client.set("k", "v"), lambda: other.flushall()),
        ("changed", lambda: client.set("k", "v"), lambda: other.append("k", "w")),
    ]
    for name, before, change in cases:
        before()
        pipe = client.pipeline()
        pipe.watch("k")
        change()
        pipe.multi()
        pipe.set("marker", name)
        try:
            pipe.execute()
            raise AssertionError(f"{name}: EXEC ran although the watched key changed")
        except redis.WatchError:
            pass
        assert client.get("marker") is None, name
    # Unchanged: EXEC runs. UNWATCH forgets the key.
    client.set("k", "v")
    with RespConn(server.port) as conn:
        assert conn.call("WATCH", "k", "k", "other") == "OK"
        assert conn.call("MULTI") == "OK"
        assert conn.call("SET", "marker", "ran") == "QUEUED"
        assert conn.call("EXEC") == ["OK"]
        assert conn.call("WATCH", "k") == "OK"
        other.set("k", "changed")
        assert conn.call("UNWATCH") == "OK"
        assert conn.call("MULTI") == "OK"
        assert conn.call("GET", "k") == "QUEUED"
        assert conn.call("EXEC") == [b"changed"]


def test_a_transaction_that_does_not_fit_changes_nothing(make_server):
    """Storage full halfway through EXEC: the client gets the error, and the transaction's
    earlier writes (a delete, a small put) are rolled back with it."""
    server = make_server(args=["--max-map-bytes", "2mb"])
    with RespConn(server.port) as conn:
        filled = 0
        for i in range(2000):
            reply = conn.call("SET", f"fill:{i}", b"v" * 4096)
            if reply != "OK":
                assert str(reply).startswith("ERR storage full"), reply
                break
            filled += 1
        assert 50 <= filled < 2000, filled
        assert conn.call("MULTI") == "OK"
        assert conn.call("DEL", "fill:0") == "QUEUED"
        assert conn.call("SET", "small", "1") == "QUEUED"
        assert conn.call("SET", "big", b"x" * (1 << 20)) == "QUEUED"
        reply = conn.call("EXEC")
        assert isinstance(reply, RespError) and str(reply).startswith("ERR storage full"), reply
        assert conn.call("EXISTS", "fill:0", "small", "big") == 1
        assert conn.call("DBSIZE") == filled
        # A transaction that fits still runs.
        assert conn.call("MULTI") == "OK"
        assert conn.call("DEL", "fill:1") == "QUEUED"
        assert conn.call("EXEC") == [1]


def test_an_acknowledged_transaction_survives_kill_9(make_server):
    server = make_server()
    client = server.client()
    expected = {}
    for round_ in range(20):
        pipe = client.pipeline()
        for i in range(10):
            key = f"t{round_}:{i}"
            expected[key.encode()] = str(round_ * 100 + i).encode()
            pipe.set(key, round_ * 100 + i)
        pipe.incr("rounds")
        assert pipe.execute()[-1] == round_ + 1
    client.close()
    server.kill9()
    server.start()
    client = server.client()
    keys = sorted(expected)
    assert client.mget(keys) == [expected[k] for k in keys]
    assert client.get("rounds") == b"20"


def test_a_replica_runs_read_only_transactions_and_refuses_writes(make_cluster):
    cluster = make_cluster(size=2)
    cluster.start_all()
    cluster.call(0, "SET", "k", "v")
    cluster.wait_converged()
    with RespConn(cluster.port(1)) as conn:
        assert conn.call("MULTI") == "OK"
        assert conn.call("GET", "k") == "QUEUED"
        assert conn.call("EXISTS", "k") == "QUEUED"
        assert conn.call("EXEC") == [b"v", 1]
        assert conn.call("MULTI") == "OK"
        reply = conn.call("SET", "k", "w")
        assert isinstance(reply, RespError) and str(reply).startswith("READONLY"), reply
        reply = conn.call("EXEC")
        assert isinstance(reply, RespError) and str(reply).startswith("EXECABORT"), reply
    # The master's transaction reaches the replica whole.
    with RespConn(cluster.port(0)) as conn:
        assert conn.call("MULTI") == "OK"
        for i in range(5):
            assert conn.call("SET", f"r{i}", str(i)) == "QUEUED"
        assert conn.call("EXEC") == ["OK"] * 5
    cluster.wait_converged()
    assert cluster.call(1, "MGET", *[f"r{i}" for i in range(5)]) == [b"0", b"1", b"2", b"3", b"4"]


def test_a_replica_never_shows_half_a_transaction(make_cluster):
    """Transactions of about 400 KB move 1 from x to y. The master ships its log to the replica
    in messages of about 1 MiB, and a message may only end where a transaction ends: a reader
    on the replica must see x + y constant while it follows the stream and while it catches up
    after a restart (when every message is full)."""
    cluster = make_cluster(size=2)
    cluster.start_all()
    master = cluster.client(0)
    master.mset({"x": 100000, "y": 0})
    cluster.wait_converged()
    pad = b"p" * 400000

    def move(times, writers=4):
        def run():
            client = cluster.client(0)
            for _ in range(times):
                client.pipeline().decr("x").set("pad", pad).incr("y").execute()
        threads = [threading.Thread(target=run) for _ in range(writers)]
        for thread in threads:
            thread.start()
        return threads

    def read_replica_until(done, seconds=30):
        replica = cluster.client(1)
        sums, deadline = [], time.monotonic() + seconds
        while not done() and time.monotonic() < deadline:
            try:
                x, y = replica.mget("x", "y")
            except redis.ConnectionError:  # the replica is still starting
                time.sleep(0.01)
                continue
            sums.append(int(x) + int(y))
        return sums

    threads = move(75)
    sums = read_replica_until(lambda: not any(t.is_alive() for t in threads))
    for thread in threads:
        thread.join(timeout=30)
    cluster.wait_converged()
    assert len(sums) > 50 and set(sums) == {100000}, f"{len(sums)} reads, sums {set(sums)}"

    # Catch-up: the replica is down while 300 transactions (120 MB) happen.
    assert cluster.stop(1) == 0
    for thread in move(75):
        thread.join(timeout=60)
    cluster.start(1)
    target = master.get("y")
    sums = read_replica_until(lambda: cluster.client(1).get("y") == target)
    assert cluster.client(1).get("y") == target, "the replica did not catch up in 30 s"
    assert len(sums) > 10 and set(sums) == {100000}, f"{len(sums)} reads, sums {set(sums)}"
    assert master.mget("x", "y") == [b"99400", b"600"]

    # Units much larger than the stream's ~1 MiB messages: MSETs of 20 values of 1 MB. The
    # replica holds a unit's records back until its last one arrives; the first and the last
    # key of each MSET must always carry the same round.
    keys = [f"m{i}" for i in range(20)]
    done = threading.Event()

    def mset_rounds():
        client = cluster.client(0)
        for round_ in range(1, 9):
            client.mset({key: str(round_).encode() * (1 << 20) for key in keys})
        done.set()

    writer = threading.Thread(target=mset_rounds)
    writer.start()
    replica, seen, deadline = cluster.client(1), set(), time.monotonic() + 60
    while not done.is_set() and time.monotonic() < deadline:
        first, last = replica.mget(keys[0], keys[-1])
        seen.add((first[:1] if first else None, last[:1] if last else None))
    writer.join(timeout=60)
    cluster.wait_converged()
    assert all(first == last for first, last in seen), f"half an MSET seen: {sorted(seen)}"
    assert cluster.client(1).get(keys[-1])[:1] == b"8"


def test_an_exec_reply_past_the_output_limit_aborts_the_transaction(make_server):
    """EXEC would build its whole reply in memory (on the writer, when it writes): past
    client_output_buffer_limit_bytes it is refused and nothing it queued is written."""
    server = make_server(args=["--max-value-bytes", "1MiB", "--max-query-buffer-bytes", "2MiB",
                               "--client-output-buffer-limit-bytes", "2MiB"])
    big = b"b" * (1 << 20)
    with RespConn(server.port) as conn:
        assert conn.call("SET", "big", big) == "OK"
        for first in ([], [("SET", "marker", "1")]):  # read-only, then with a write
            assert conn.call("MULTI") == "OK"
            for command in first + [("GET", "big")] * 5:
                assert conn.call(*command) == "QUEUED"
            reply = conn.call("EXEC")
            assert isinstance(reply, RespError), reply
            assert str(reply).startswith("EXECABORT") and "output limit" in str(reply), reply
            assert conn.call("EXISTS", "marker") == 0
        # The connection and the server go on; a transaction within the limit runs.
        assert conn.call("MULTI") == "OK"
        assert conn.call("GET", "big") == "QUEUED"
        assert conn.call("EXEC") == [big]


def test_sync_mode_waits_only_for_transactions_that_wrote(make_cluster):
    """With no replica to acknowledge, a write that changed something answers -NOREPLICAS after
    sync_timeout_ms; an EXEC whose WATCH failed, or whose writes changed nothing, has nothing to
    replicate and answers at once, as a SET NX that found its key does."""
    cluster = make_cluster(size=2, extra_args=["--replication-mode", "sync",
                                               "--sync-timeout-ms", "1500"])
    cluster.start(0)
    with RespConn(cluster.port(0)) as conn, RespConn(cluster.port(0)) as other:
        assert str(conn.call("SET", "b", "0")).startswith("NOREPLICAS")
        assert conn.call("WATCH", "b") == "OK"
        assert str(other.call("SET", "b", "1")).startswith("NOREPLICAS")
        for commands, expected in ((["SET b 9"], None), (["GET b", "SET b 1 NX"], [b"1", None])):
            assert conn.call("MULTI") == "OK"
            for command in commands:
                assert conn.call(*command.split()) == "QUEUED"
            started = time.monotonic()
            assert conn.call("EXEC") == expected
            assert time.monotonic() - started < 1.0, "EXEC waited for replicas with nothing to send"
        started = time.monotonic()
        assert conn.call("SET", "b", "2", "NX") is None
        assert time.monotonic() - started < 1.0
        assert conn.call("MULTI") == "OK"
        assert conn.call("INCR", "b") == "QUEUED"
        reply = conn.call("EXEC")
        assert isinstance(reply, RespError) and str(reply).startswith("NOREPLICAS"), reply
        assert conn.call("GET", "b") == b"2", "the write stays on the master"
        # It ran, so its INCR counts (the EXEC itself is an error reply).
        stats = conn.call("INFO", "commandstats").decode()
        assert "cmdstat_incr:calls=1," in stats, stats


def commandstats(client):
    """INFO commandstats as {command: (calls, failed_calls)}."""
    stats = {}
    for name, fields in client.info("commandstats").items():
        stats[name.removeprefix("cmdstat_")] = (fields["calls"], fields["failed_calls"])
    return stats


def test_the_commands_of_a_transaction_count_in_commandstats(server):
    # As Redis: a command EXEC runs is counted like one sent alone, so that per-command rates
    # stay right for clients whose pipelines are transactions (redis-py's default).
    client = server.client()
    client.set("text", "x")
    pipe = client.pipeline()
    pipe.set("a", 1).set("b", 2).incr("a").incr("text").get("b")
    pipe.execute(raise_on_error=False)
    read_only = client.pipeline()
    read_only.get("a").mget("a", "b").exists("text")
    assert read_only.execute() == [b"2", [b"2", b"2"], 1]
    stats = commandstats(client)
    assert stats["set"] == (3, 0)
    assert stats["incrby"] == (2, 1)  # redis-py sends INCR as INCRBY
    assert stats["get"] == (2, 0)
    assert stats["mget"] == (1, 0) and stats["exists"] == (1, 0)
    assert stats["multi"] == (2, 0) and stats["exec"] == (2, 0)
    # A transaction that did not run (its WATCH failed, or it was discarded) counts only its
    # EXEC or DISCARD.
    with client.pipeline() as watched:
        watched.watch("a")
        client.set("a", "changed")
        watched.multi()
        watched.incr("a")
        try:
            watched.execute()
            assert False, "EXEC ran although the watched key changed"
        except redis.WatchError:
            pass
    stats = commandstats(client)
    assert stats["incrby"] == (2, 1) and stats["set"] == (4, 0) and stats["exec"] == (3, 0)
