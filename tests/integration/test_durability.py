"""Durability with real crashes: writers record every acknowledged write, the server is killed
(kill -9) or stopped (SIGTERM) mid-stream, and after a restart on the same data directory every
acknowledged write must be there. A write in flight at the crash may or may not have landed."""
import os
import random
import signal
import threading
import time

import redis

WRITERS = 4


class KeyModel:
    """What one key may hold: `base` (the values it may hold from before) and `inflight`
    (a write sent but not acknowledged when the server died, which may or may not have landed)."""

    __slots__ = ("base", "inflight")

    def __init__(self):
        self.base = {None}
        self.inflight = None


class Writer(threading.Thread):
    """Sequential SETs of key_<id>_<n> = value_<cycle>_<n> and an INCR every 5th write, each
    recorded only once acknowledged. Bounded in count and time; stops at the first error."""

    def __init__(self, port, writer_id, cycle, keys, stop):
        super().__init__(daemon=True)
        self.port, self.writer_id, self.cycle = port, writer_id, cycle
        self.keys, self.stop = keys, stop
        self.acked = 0
        self.incr_sent = 0
        self.incr_acked = 0
        self.error = None

    def run(self):
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10,
                             socket_connect_timeout=5)
        deadline = time.monotonic() + 20
        try:
            for n in range(100000):
                if self.stop.is_set() or time.monotonic() > deadline:
                    return
                key = f"key_{self.writer_id}_{n}"
                value = f"value_{self.cycle}_{n}".encode()
                model = self.keys.setdefault(key, KeyModel())
                model.inflight = value
                client.set(key, value)
                model.base = {value}
                model.inflight = None
                self.acked += 1
                if n % 5 == 0:
                    self.incr_sent += 1
                    client.incr("counter")
                    self.incr_acked += 1
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            self.error = e
        finally:
            client.close()


class Ledger:
    """Everything acknowledged so far, across crashes, and the check after each restart."""

    def __init__(self):
        self.keys = [dict() for _ in range(WRITERS)]  # per writer: key -> KeyModel
        self.counter_low = 0
        self.counter_high = 0
        self.total_acked = 0

    def run_writers(self, port, cycle, stop):
        writers = [Writer(port, i, cycle, self.keys[i], stop) for i in range(WRITERS)]
        for writer in writers:
            writer.start()
        return writers

    def collect(self, writers):
        acked = 0
        for writer in writers:
            writer.join(timeout=30)
            assert not writer.is_alive(), "a writer did not stop"
            self.counter_low += writer.incr_acked
            self.counter_high += writer.incr_sent
            acked += writer.acked
        self.total_acked += acked
        return acked

    def verify(self, client, what):
        """Checks the restarted server against the ledger, then adopts what it holds as the new
        base (it was recovered from disk, so it must stay)."""
        problems = []
        for keys in self.keys:
            names = sorted(keys)
            for start in range(0, len(names), 1000):
                chunk = names[start:start + 1000]
                for key, got in zip(chunk, client.mget(chunk)):
                    model = keys[key]
                    if got not in model.base and got != model.inflight:
                        problems.append(f"{key}: got {got!r}, acknowledged {sorted(map(str, model.base))}"
                                        f", in flight {model.inflight!r}")
                    model.base = {got}
                    model.inflight = None
        counter = int(client.get("counter") or 0)
        if not self.counter_low <= counter <= self.counter_high:
            problems.append(f"counter {counter}: {self.counter_low} increments acknowledged, "
                            f"{self.counter_high} sent")
        self.counter_low = self.counter_high = counter
        assert not problems, (f"{what}: {len(problems)} acknowledged writes lost or wrong:\n" +
                              "\n".join(problems[:20]))


def crash_cycles(server, cycles, seed):
    rng = random.Random(seed)
    ledger = Ledger()
    for cycle in range(cycles):
        stop = threading.Event()
        writers = ledger.run_writers(server.port, cycle, stop)
        delay = rng.uniform(0.2, 0.6)
        time.sleep(delay)
        server.kill9()
        stop.set()
        acked = ledger.collect(writers)
        assert acked >= 10, f"cycle {cycle}: only {acked} writes acknowledged in {delay:.2f} s"
        server.start()
        client = server.client()
        ledger.verify(client, f"cycle {cycle} (seed {seed}, killed after {delay:.2f} s)")
        client.close()
    return ledger


def test_kill9_cycles_lose_no_acknowledged_write(make_server):
    seed = int(os.environ.get("KVSTORE_TEST_SEED", random.randrange(1 << 30)))
    server = make_server()
    started = time.monotonic()
    ledger = crash_cycles(server, cycles=20, seed=seed)
    assert ledger.total_acked > 500
    assert ledger.counter_low > 0
    assert time.monotonic() - started < 90


def test_kill9_with_fsync_interval_loses_no_acknowledged_write(make_server):
    seed = int(os.environ.get("KVSTORE_TEST_SEED", random.randrange(1 << 30)))
    server = make_server(args=["--fsync", "interval", "--fsync-interval-ms", "1000"])
    ledger = crash_cycles(server, cycles=4, seed=seed)
    assert ledger.total_acked > 100


def test_sigterm_during_writes_exits_cleanly_and_keeps_everything(make_server):
    server = make_server()
    ledger = Ledger()
    stop = threading.Event()
    writers = ledger.run_writers(server.port, 0, stop)
    time.sleep(0.4)
    server.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    try:
        code = server.proc.wait(timeout=10)
    finally:
        stop.set()
    elapsed = time.monotonic() - sent
    server.log.close()
    assert code == 0, f"exit code {code} after SIGTERM:\n{server.logs()}"
    assert elapsed < 10
    ledger.collect(writers)
    assert ledger.total_acked >= 10
    server.start()
    client = server.client()
    ledger.verify(client, "after SIGTERM")
    client.close()
