#!/usr/bin/env python3
"""kvstore replication benchmark: lag, catch-up, full resync, and master throughput vs redis-server.

Runs kvstore "pods" as local processes on loopback (POD_NAME=kvstore-N, a ConfigMap directory with
MASTER_ORDINAL=0, MASTER_ADDRESS=127.0.0.1:<prefix>{ordinal}, ports <base>+N), and measures:

1. lag      replication lag p50/p99 (ms): a single-threaded loop SETs unique keys on the master at a
            steady rate and polls a replica with MGET for the keys not seen yet; lag = first time
            the replica returned the value - time the master's +OK arrived (one process, one
            perf_counter clock, loopback). Target: p99 < 5 ms.
2. catchup  a replica is stopped (SIGTERM) while the master takes N SETs (redis-benchmark -t set
            -r 1000000 -d 100 -P 16 -c 50), then restarted; rate = entries / seconds from the
            restart until its master_repl_offset equals the master's. Must be a partial resync
            (kvstore_full_resyncs unchanged, no "full resync" in the replica's log).
            Target: >= 200k entries/s.
3. fullsync a master holds ~--full-resync-mb MiB (1000-byte values) and has trimmed its log
            (--repl-backlog-bytes 16MiB, so that a full resync is needed); a replica with an
            empty data directory starts; rate = snapshot bytes (master's log line "full resync: snapshot
            written ... bytes=N") / seconds from its start until it converged (same
            master_repl_offset, link up). The replica's own "full resync done ... seconds=S" is
            reported too. No target in the issue: reported only.
4. throughput  redis-benchmark -t set -n N -r 1000000 -d 100 -c 50 (not pipelined) against a kvstore
            master with 2 replicas (async mode, then sync mode with --sync-replicas 1) and against a
            redis-server master with 2 replicas (replicaof; appendonly yes, appendfsync always on all
            three), same run. Target: async >= 1.5x redis; sync is reported.

Writes bench/results/replication-<UTC time>.{md,json}.

Usage:
  bench/replication.py [--quick] [--kvstore PATH] [--only lag,catchup,fullsync,throughput]
                       [--rounds 3]
                       [--full-resync-mb 1024] [--lag-rate 3000] [--lag-seconds 20]
                       [--base-port 23450] [--keep-logs]
--quick shrinks every workload about 10x (a smoke run; its figures are not the benchmark's).
lag, catchup and throughput run --rounds times (fresh pods each time) and report the median
round, with every round's figure alongside: on this shared VM one round can be 2x another.
"""
import argparse
import csv
import io
import json
import math
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROOT, free_port  # noqa: E402  (shared with the core benchmark)

PROCS = []  # every process started, killed in main()'s finally


class BenchError(RuntimeError):
    pass


# ---------------------------------------------------------------- RESP

class RespError(Exception):
    pass


class Incomplete(Exception):
    pass


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def parse(buf, pos=0):
    """One RESP2 value from buf[pos:]: (value, next pos), or Incomplete. Errors come back as
    RespError instances (not raised), bulk strings as bytes, nil as None."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise Incomplete
    kind, line = buf[pos:pos + 1], bytes(buf[pos + 1:end])
    nxt = end + 2
    if kind == b"+":
        return line.decode(), nxt
    if kind == b"-":
        return RespError(line.decode()), nxt
    if kind == b":":
        return int(line), nxt
    if kind == b"$":
        n = int(line)
        if n < 0:
            return None, nxt
        if len(buf) < nxt + n + 2:
            raise Incomplete
        return bytes(buf[nxt:nxt + n]), nxt + n + 2
    if kind == b"*":
        n = int(line)
        if n < 0:
            return None, nxt
        items = []
        for _ in range(n):
            item, nxt = parse(buf, nxt)
            items.append(item)
        return items, nxt
    raise BenchError(f"bad RESP reply type {kind!r}")


class Conn:
    """A blocking RESP connection."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def read_reply(self):
        while True:
            try:
                value, pos = parse(self.buf)
                del self.buf[:pos]
                return value
            except Incomplete:
                data = self.sock.recv(1 << 20)
                if not data:
                    raise BenchError("connection closed by the server")
                self.buf += data

    def command(self, *args):
        self.sock.sendall(encode(*args))
        value = self.read_reply()
        if isinstance(value, RespError):
            raise value
        return value

    def close(self):
        self.sock.close()


def query(port, *args, timeout=10.0):
    c = Conn(port, timeout)
    try:
        return c.command(*args)
    finally:
        c.close()


def info(port, section="replication", timeout=10.0):
    text = query(port, "INFO", section, timeout=timeout).decode()
    fields = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            fields[k] = v.strip()
    return fields


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


# ---------------------------------------------------------------- processes

def wait_until(what, predicate, timeout, interval=0.05, proc=None, log=None):
    """Polls predicate() (exceptions count as False) until true; BenchError after timeout."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what}: process exited with {proc.returncode}" + log_tail(log))
        try:
            result = predicate()
            if result:
                return result
        except (OSError, BenchError, RespError, ValueError) as e:
            last_error = e
        time.sleep(interval)
    raise BenchError(f"{what}: not within {timeout:.0f}s (last error: {last_error})" + log_tail(log))


def log_tail(path, lines=15):
    if path is None or not Path(path).exists():
        return ""
    text = Path(path).read_text(errors="replace").splitlines()[-lines:]
    return "\n  log " + str(path) + ":\n    " + "\n    ".join(text)


def stop_proc(proc, sig=signal.SIGTERM, timeout=30):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def ping(port):
    return query(port, "PING", timeout=1.0) == "PONG"


class Pod:
    """One kvstore pod: a process with POD_NAME=kvstore-<ordinal> and its own data directory."""

    def __init__(self, cluster, ordinal):
        self.cluster, self.ordinal = cluster, ordinal
        self.port = cluster.base_port + ordinal
        self.data = cluster.root / f"kvstore-{ordinal}"
        self.log = cluster.root / f"kvstore-{ordinal}.log"
        self.proc = None

    def start(self, wait=True):
        self.data.mkdir(parents=True, exist_ok=True)
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TZ") if k in os.environ}
        env.update({"POD_NAME": f"kvstore-{self.ordinal}",
                    "MASTER_ADDRESS": f"127.0.0.1:{self.cluster.base_port // 10}{{ordinal}}"})
        cmd = [self.cluster.binary, "--config-dir", str(self.cluster.config_dir),
               "--port", str(self.port), "--bind", "127.0.0.1", "--admin-port", "0",
               "--data-dir", str(self.data), "--log-level", "info",
               "--shutdown-replica-wait-ms", "2000"] + self.cluster.extra_args
        with open(self.log, "ab") as log:
            log.write(f"==== bench: start {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        PROCS.append(self.proc)
        if wait:
            wait_until(f"kvstore-{self.ordinal} start", lambda: ping(self.port), 60,
                       proc=self.proc, log=self.log)
        return self

    def stop(self, sig=signal.SIGTERM):
        stop_proc(self.proc, sig)

    def info(self, section="replication"):
        return info(self.port, section)

    def offset(self):
        return int(self.info()["master_repl_offset"])


class Cluster:
    def __init__(self, binary, workdir, base_port, extra_args=(), name="cluster"):
        self.binary, self.base_port, self.extra_args = binary, base_port, list(extra_args)
        self.root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
        self.config_dir = self.root / "config"
        self.config_dir.mkdir()
        (self.config_dir / "MASTER_ORDINAL").write_text("0\n")
        self.pods = {}

    def pod(self, ordinal):
        if ordinal not in self.pods:
            self.pods[ordinal] = Pod(self, ordinal)
        return self.pods[ordinal]

    def wait_converged(self, ordinals, timeout):
        master = self.pod(0)

        def converged():
            target = master.offset()
            for o in ordinals:
                i = self.pod(o).info()
                if i.get("master_link_status") != "up" or int(i["master_repl_offset"]) != target:
                    return False
            return master.offset() == target

        wait_until(f"replicas {ordinals} converge", converged, timeout, interval=0.05,
                   log=self.pod(ordinals[0]).log if ordinals else None)

    def stop_all(self):
        for o in sorted(self.pods, reverse=True):  # replicas first, then the master
            self.pods[o].stop()

    def log_issues(self, limit=20):
        issues = []
        for o, pod in sorted(self.pods.items()):
            if not pod.log.exists():
                continue
            for line in pod.log.read_text(errors="replace").splitlines():
                if re.search(r"\b(WARN|WARNING|ERROR|CRITICAL|FATAL)\b|Assertion|terminate called|"
                             r"AddressSanitizer|Segmentation", line):
                    issues.append(f"kvstore-{o}: {line}")
        return issues[:limit]


def choose_base_port(requested):
    """requested (a multiple of 10) if its 4 ports are free, else another free block."""
    def free_block(base):
        for p in range(base, base + 4):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    return False
        return True

    if requested % 10 != 0:
        raise BenchError("--base-port must be a multiple of 10 (MASTER_ADDRESS uses <prefix>{ordinal})")
    for base in [requested] + list(range(21000, 29990, 10)):
        if free_block(base):
            return base
    raise BenchError("no free block of 4 ports")


def redis_benchmark(port, args, timeout):
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "--csv"] + [str(a) for a in args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-2000:]}")
    results = {}
    for row in csv.DictReader(io.StringIO(out.stdout)):
        results[row["test"]] = {"rps": float(row["rps"]), "p50_ms": float(row["p50_latency_ms"]),
                                "p99_ms": float(row["p99_latency_ms"])}
    if not results:
        raise BenchError(f"no results from {' '.join(cmd)}: {out.stdout[-500:]} {out.stderr[-500:]}")
    return results


# ---------------------------------------------------------------- 1. lag

def measure_lag(master_port, replica_port, rate, seconds, warmup, poll_gap):
    """Single-threaded: SETs at `rate`/s on the master (pipelined when replies are slower than the
    rate), MGETs the not-yet-seen keys on the replica, one MGET in flight at a time."""
    m, r = Conn(master_port), Conn(replica_port)
    prefix = f"lag:{os.getpid()}:{time.time_ns()}:"
    total = int(rate * (seconds + warmup))
    interval = 1.0 / rate
    sent, acked, seen = [0.0] * total, [None] * total, [None] * total
    outstanding = []  # SET indices awaiting +OK, in order
    out_head = 0
    pending = {}  # index -> None, keys sent and not seen on the replica (insertion ordered)
    batch, batch_sent, last_poll = None, 0.0, 0.0
    m_buf, r_buf = bytearray(), bytearray()
    errors = []
    start = time.perf_counter()
    deadline = start + seconds + warmup + 30
    nxt = 0
    try:
        while True:
            now = time.perf_counter()
            if now > deadline:
                raise BenchError(f"lag: not done 30s after the last write: {len(pending)} keys never "
                                 f"seen on the replica, {len(outstanding) - out_head} SETs unanswered")
            while nxt < total and start + nxt * interval <= now:
                m.sock.sendall(encode("SET", f"{prefix}{nxt}", f"{now:.6f}"))
                sent[nxt] = now
                outstanding.append(nxt)
                pending[nxt] = None
                nxt += 1
            if batch is None and pending and now - last_poll >= poll_gap:
                batch = list(pending)[:512]
                r.sock.sendall(encode("MGET", *[f"{prefix}{i}" for i in batch]))
                batch_sent = last_poll = now
            if nxt >= total and out_head == len(outstanding) and not pending and batch is None:
                break
            wait = max(0.0, start + nxt * interval - now) if nxt < total else 0.05
            if batch is None and pending:
                wait = min(wait, max(0.0, poll_gap - (now - last_poll)))
            readable, _, _ = select.select([m.sock, r.sock], [], [], wait)
            for sock in readable:
                data = sock.recv(1 << 20)
                t = time.perf_counter()
                if not data:
                    raise BenchError("lag: a server closed the connection")
                if sock is m.sock:
                    m_buf += data
                    pos = 0
                    while True:
                        try:
                            value, pos2 = parse(m_buf, pos)
                        except Incomplete:
                            break
                        pos = pos2
                        i = outstanding[out_head]
                        out_head += 1
                        if value != "OK":
                            errors.append(f"SET: {value}")
                        acked[i] = t
                    del m_buf[:pos]
                else:
                    r_buf += data
                    try:
                        values, pos = parse(r_buf)
                    except Incomplete:
                        continue
                    del r_buf[:pos]
                    if isinstance(values, RespError):
                        raise BenchError(f"lag: MGET on the replica: {values}")
                    for i, v in zip(batch, values):
                        if v is not None:
                            seen[i] = t
                            pending.pop(i, None)
                    batch = None
    finally:
        m.close()
        r.close()
    first = int(rate * warmup)
    lags, before_ack, write_lat, from_send = [], 0, [], []
    for i in range(first, total):
        if acked[i] is None or seen[i] is None:
            continue
        d = seen[i] - acked[i]
        if d < 0:
            before_ack += 1
        lags.append(max(0.0, d) * 1000)
        write_lat.append((acked[i] - sent[i]) * 1000)
        from_send.append((seen[i] - sent[i]) * 1000)
    return {
        "samples": len(lags), "rate_per_s": rate, "seconds": seconds, "warmup_s": warmup,
        "p50_ms": round(pct(lags, 50), 3), "p99_ms": round(pct(lags, 99), 3),
        "p999_ms": round(pct(lags, 99.9), 3), "max_ms": round(max(lags), 3),
        "mean_ms": round(statistics.fmean(lags), 3),
        "visible_before_ack_pct": round(100 * before_ack / len(lags), 1),
        "master_set_p50_ms": round(pct(write_lat, 50), 3),
        "master_set_p99_ms": round(pct(write_lat, 99), 3),
        "send_to_visible_p50_ms": round(pct(from_send, 50), 3),
        "send_to_visible_p99_ms": round(pct(from_send, 99), 3),
        "set_errors": errors[:5], "set_error_count": len(errors),
    }


def phase_lag(args, workdir, base_port):
    cl = Cluster(args.kvstore, workdir, base_port, name="lag")
    bg = None
    try:
        master = cl.pod(0).start()
        replica = cl.pod(1).start()
        cl.wait_converged([1], 60)
        if args.lag_background:
            bg = subprocess.Popen(["redis-benchmark", "-h", "127.0.0.1", "-p", str(master.port),
                                   "-t", "set", "-n", "100000000", "-r", "1000000", "-d", "100",
                                   "-c", "4", "-q"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
            PROCS.append(bg)
            time.sleep(1)
        result = measure_lag(master.port, replica.port, args.lag_rate, args.lag_seconds,
                             args.lag_warmup, args.lag_poll_us / 1e6)
        result["background_load"] = ("redis-benchmark -t set -c 4 (unthrottled)"
                                     if args.lag_background else "none")
        return result, cl
    finally:
        stop_proc(bg, signal.SIGKILL)
        cl.stop_all()


# ---------------------------------------------------------------- 2. catch-up

def phase_catchup(args, workdir, base_port):
    cl = Cluster(args.kvstore, workdir, base_port,
                 ["--repl-backlog-bytes", "2GiB", "--repl-backlog-max-bytes", "8GiB"], name="catchup")
    try:
        master = cl.pod(0).start()
        replica = cl.pod(1).start()
        cl.wait_converged([1], 60)
        full_before = int(replica.info().get("kvstore_full_resyncs", 0))
        replica_off = replica.offset()
        replica.stop()
        if replica.proc.returncode not in (0, -signal.SIGTERM):
            raise BenchError(f"replica exited with {replica.proc.returncode} on SIGTERM")
        log_size = replica.log.stat().st_size
        n = args.catchup_writes
        t = time.monotonic()
        bench = redis_benchmark(master.port, ["-t", "set", "-n", n, "-r", 1000000, "-d", 100,
                                              "-P", 16, "-c", 50], timeout=max(600, n / 1000))
        write_s = time.monotonic() - t
        master_off = master.offset()
        entries = master_off - replica_off
        t0 = time.perf_counter()
        replica.start(wait=False)
        marks = {}

        def caught_up():
            i = replica.info()
            now = time.perf_counter()
            marks.setdefault("serving", now)
            if i.get("master_link_status") == "up":
                marks.setdefault("link_up", now)
            if int(i["master_repl_offset"]) == master_off:
                marks["done"] = now
                return i
            return None

        final = wait_until("catch-up", caught_up, max(120, entries / 20000), interval=0.01,
                           proc=replica.proc, log=replica.log)
        seconds = marks["done"] - t0
        new_log = replica.log.read_bytes()[log_size:].decode(errors="replace")
        full_after = int(final.get("kvstore_full_resyncs", 0))
        partial = "full resync" not in new_log and full_after <= full_before
        result = {
            "entries": entries, "writes": n, "write_rps": round(bench["SET"]["rps"]),
            "write_seconds": round(write_s, 2), "seconds": round(seconds, 3),
            "entries_per_s": round(entries / seconds),
            "process_start_s": round(marks["serving"] - t0, 3),
            "link_up_s": round(marks.get("link_up", marks["done"]) - t0, 3),
            "entries_per_s_after_link_up":
                round(entries / max(1e-6, marks["done"] - marks.get("link_up", t0))),
            "full_resyncs_before": full_before, "full_resyncs_after": full_after,
            "partial_resyncs_after": int(final.get("kvstore_partial_resyncs", 0)),
            "partial_resync": partial,
        }
        if not partial:
            result["error"] = "the replica got a FULL resync (backlog too small?)"
        return result, cl
    finally:
        cl.stop_all()


# ---------------------------------------------------------------- 3. full resync

def last_field(path, message, start_at=0):
    """Fields (key=value) of the last log line containing message, after byte offset start_at."""
    text = Path(path).read_bytes()[start_at:].decode(errors="replace")
    hits = [line for line in text.splitlines() if message in line]
    if not hits:
        return None
    return dict(re.findall(r'(\w+)=("[^"]*"|\S+)', hits[-1]))


def phase_fullsync(args, workdir, base_port):
    value_bytes = 1000
    # A small backlog, so that the log no longer holds sequence 1 once loaded: a fresh replica then
    # needs a full resync (with the whole log retained it would replay the log instead).
    cl = Cluster(args.kvstore, workdir, base_port,
                 ["--repl-backlog-bytes", "16MiB", "--log-segment-bytes", "16MiB"], name="fullsync")
    try:
        master = cl.pod(0).start()
        target_keys = int(args.full_resync_mb * 1024 * 1024 / value_bytes)
        n = math.ceil(target_keys / 0.95)  # random keys over 10n: ~95% distinct
        t = time.monotonic()
        redis_benchmark(master.port, ["-t", "set", "-n", n, "-r", 10 * n, "-d", value_bytes,
                                      "-P", 16, "-c", 50], timeout=max(600, n / 500))
        load_s = time.monotonic() - t
        dbsize = query(master.port, "DBSIZE")
        wait_until("master log trimmed past sequence 1 (checkpoint)",
                   lambda: int(master.info()["repl_backlog_first_byte_offset"]) > 1, 60,
                   interval=0.2, log=master.log)
        mem = master.info("memory")
        master_off = master.offset()
        master_log_at = master.log.stat().st_size
        replica = cl.pod(1)
        t0 = time.perf_counter()
        replica.start(wait=False)
        cl.wait_converged([1], 120 + args.full_resync_mb * 1.0)
        seconds = time.perf_counter() - t0
        written = last_field(master.log, "full resync: snapshot written", master_log_at)
        done = last_field(replica.log, "full resync done")
        if written is None or done is None:
            raise BenchError("full resync: log lines not found (master: "
                             f"{written}, replica: {done})" + log_tail(replica.log))
        snap_bytes = int(written["bytes"])
        rinfo = replica.info()
        digests = (query(master.port, "DIGEST"), query(replica.port, "DIGEST"))
        return {
            "value_bytes": value_bytes, "keys": dbsize, "load_seconds": round(load_s, 1),
            "dataset_mib": round(dbsize * value_bytes / 2**20, 1),
            "master_map_used_bytes": int(mem.get("kvstore_map_used_bytes", 0)),
            "master_offset": master_off, "snapshot_bytes": snap_bytes,
            "snapshot_mib": round(snap_bytes / 2**20, 1),
            "snapshot_write_seconds": float(written.get("seconds", "nan")),
            "replica_sync_seconds": float(done.get("seconds", "nan")),
            "seconds": round(seconds, 3),
            "mb_per_s": round(snap_bytes / 2**20 / seconds, 1),
            "mb_per_s_replica_log": round(snap_bytes / 2**20 / float(done["seconds"]), 1),
            "replica_full_resyncs": int(rinfo.get("kvstore_full_resyncs", 0)),
            "digest_match": digests[0] == digests[1],
        }, cl
    finally:
        cl.stop_all()


# ---------------------------------------------------------------- 4. throughput

def kvstore_throughput(args, workdir, base_port, mode):
    extra = ["--replication-mode", mode] + (["--sync-replicas", "1"] if mode == "sync" else [])
    cl = Cluster(args.kvstore, workdir, base_port, extra, name=f"throughput-{mode}")
    try:
        master = cl.pod(0).start()
        cl.pod(1).start()
        cl.pod(2).start()
        cl.wait_converged([1, 2], 60)
        connected = int(master.info().get("connected_slaves", 0))
        if connected != 2:
            raise BenchError(f"kvstore master has {connected} replicas, expected 2")
        out_before = int(master.info("stats")["total_net_output_bytes"])
        pods = [cl.pod(i) for i in range(3)]
        fsyncs_before = [int(p.info("persistence")["kvstore_fsyncs"]) for p in pods]
        started = time.monotonic()
        res = redis_benchmark(master.port, ["-t", "set", "-n", args.tput_requests, "-r", 1000000,
                                            "-d", 100, "-c", 50], timeout=1800)["SET"]
        # redis-benchmark does not count error replies: every +OK is 5 bytes, a -NOREPLICAS about
        # 60, so output beyond 5 per request (less the INFO/CONFIG replies, a few KiB) means errors.
        extra = int(master.info("stats")["total_net_output_bytes"]) - out_before \
            - 5 * args.tput_requests
        elapsed = time.monotonic() - started
        # fdatasyncs per second of each pod during the run: master, replica 1, replica 2.
        res["fsyncs_per_s"] = [round((int(p.info("persistence")["kvstore_fsyncs"]) - b) / elapsed)
                               for p, b in zip(pods, fsyncs_before)]
        res["non_ok_replies_estimate"] = max(0, (extra - 16384) // 55)
        cl.wait_converged([1, 2], 120)
        res["replicas_converged"] = True
        return res, cl
    finally:
        cl.stop_all()


def redis_throughput(args, workdir):
    root = Path(tempfile.mkdtemp(prefix="redis-repl-", dir=workdir))
    procs, ports = [], []
    try:
        for i in range(3):
            port = free_port()
            d = root / f"redis-{i}"
            d.mkdir()
            cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d),
                   "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                   "--loglevel", "warning", "--logfile", str(root / f"redis-{i}.log")]
            if i > 0:
                cmd += ["--replicaof", "127.0.0.1", str(ports[0])]
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            PROCS.append(p)
            procs.append(p)
            ports.append(port)
            wait_until(f"redis-{i} start", lambda: ping(port), 30, proc=p)
        for i in (1, 2):
            wait_until(f"redis-{i} link up",
                       lambda: info(ports[i]).get("master_link_status") == "up", 60, proc=procs[i])
        wait_until("redis master sees 2 replicas",
                   lambda: int(info(ports[0]).get("connected_slaves", 0)) == 2, 30)
        res = redis_benchmark(ports[0], ["-t", "set", "-n", args.tput_requests, "-r", 1000000,
                                         "-d", 100, "-c", 50], timeout=1800)["SET"]
        return res
    finally:
        for p in reversed(procs):
            stop_proc(p)
        shutil.rmtree(root, ignore_errors=True)


def phase_throughput(args, workdir, base_port):
    """redis, kvstore async and kvstore sync alternately, --rounds times; each server's figure is
    its median round, and the ratios of every round are kept (one round on this VM can be far
    from the next)."""
    out = {"requests": args.tput_requests,
           "workload": "redis-benchmark -t set -r 1000000 -d 100 -c 50 (P=1)"}
    clusters = []
    runs = {"redis": [], "kvstore_async": [], "kvstore_sync": []}
    for _ in range(max(1, args.rounds)):
        runs["redis"].append(redis_throughput(args, workdir))
        for mode in ("async", "sync"):
            res, cl = kvstore_throughput(args, workdir, base_port, mode)
            runs[f"kvstore_{mode}"].append(res)
            clusters.append(cl)
    for name, rounds in runs.items():
        ordered = sorted(rounds, key=lambda r: r["rps"])
        out[name] = dict(ordered[(len(ordered) - 1) // 2])
        out[name]["rounds_rps"] = [round(r["rps"]) for r in rounds]
    for mode in ("async", "sync"):
        out[f"ratio_{mode}"] = round(out[f"kvstore_{mode}"]["rps"] / out["redis"]["rps"], 2)
        out[f"round_ratios_{mode}"] = [round(k["rps"] / r["rps"], 2) for k, r in
                                       zip(runs[f"kvstore_{mode}"], runs["redis"])]
    return out, clusters


# ---------------------------------------------------------------- report

def machine():
    def cmd(*c):
        try:
            return subprocess.run(c, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"nproc": os.cpu_count(), "kernel": platform.release(),
            "cpu": next((line.split(":", 1)[1].strip() for line in
                         Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("model name")), ""),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "redis": cmd("redis-server", "--version"),
            "git": cmd("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")}


def figures(results):
    """(name, value, unit, target text, met) rows."""
    rows = []
    lag = results.get("lag")
    if lag and "error" not in lag:
        rows.append(("replication lag p50", lag["p50_ms"], "ms", "", None))
        rows.append(("replication lag p99", lag["p99_ms"], "ms", "< 5 ms", lag["p99_ms"] < 5))
        if "rounds" in lag:
            rows.append(("replication lag p99, every round", ", ".join(map(str, lag["rounds"])),
                         "ms", "", None))
    cu = results.get("catchup")
    if cu and "entries_per_s" in cu:
        rows.append(("catch-up rate (partial resync)", cu["entries_per_s"], "entries/s",
                     ">= 200000 entries/s", cu["entries_per_s"] >= 200000 and cu["partial_resync"]))
        if "rounds" in cu:
            rows.append(("catch-up rate, every round", ", ".join(map(str, cu["rounds"])),
                         "entries/s", "", None))
    fs = results.get("fullsync")
    if fs and "mb_per_s" in fs:
        rows.append((f"full resync rate ({fs['snapshot_mib']} MiB snapshot)", fs["mb_per_s"],
                     "MiB/s", "(none)", None))
    tp = results.get("throughput")
    if tp and "ratio_async" in tp:
        rows.append(("master SET, 2 replicas, async / redis", tp["ratio_async"], "x",
                     ">= 1.5x", tp["ratio_async"] >= 1.5))
        rows.append(("master SET, 2 replicas, sync / redis", tp["ratio_sync"], "x", "(reported)",
                     None))
        if "round_ratios_async" in tp:
            rows.append(("async / redis, every round", ", ".join(map(str, tp["round_ratios_async"])),
                         "x", "", None))
    return rows


def write_report(out_dir, stamp, meta, results):
    rows = figures(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = [{"figure": n, "value": v, "unit": u, "target": t,
                "met": (None if m is None else bool(m))} for n, v, u, t, m in rows]
    doc = {"meta": meta, "summary": summary, "results": results}
    (out_dir / f"replication-{stamp}.json").write_text(json.dumps(doc, indent=2, default=str))
    m = meta["machine"]
    lines = [f"# kvstore replication benchmark, {stamp}{' (QUICK smoke run)' if meta['quick'] else ''}",
             "", f"{m['nproc']} CPUs ({m['cpu']}), kernel {m['kernel']}, load average at start "
             f"{m['loadavg_at_start']}, loopback; kvstore git {m['git']}, {m['redis']}.",
             f"kvstore pods: fsync always (default), log level info. Took {meta['seconds']} s.", "",
             "| figure | value | target | met |", "|---|---|---|---|"]
    for n, v, u, t, met in rows:
        lines.append(f"| {n} | **{v}** {u} | {t} | "
                     f"{'n/a' if met is None else ('met' if met else '**MISSED**')} |")
    lag = results.get("lag", {})
    if "p50_ms" in lag:
        lines += ["", "## Lag", "",
                  f"SET k<i> <ts> on the master at {lag['rate_per_s']}/s for {lag['seconds']} s "
                  f"(after {lag['warmup_s']} s warm-up), background load: {lag['background_load']}; "
                  "a replica polled with MGET for every key not yet seen. Lag = first reply that "
                  "carried the value - arrival of the master's +OK (0 when the replica had it first).",
                  "", "| samples | p50 ms | p99 ms | p99.9 ms | max ms | seen before +OK | "
                  "master SET p50 / p99 ms | SET sent -> visible p50 / p99 ms |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| {lag['samples']} | {lag['p50_ms']} | {lag['p99_ms']} | {lag['p999_ms']} | "
                  f"{lag['max_ms']} | {lag['visible_before_ack_pct']}% | {lag['master_set_p50_ms']} / "
                  f"{lag['master_set_p99_ms']} | {lag['send_to_visible_p50_ms']} / "
                  f"{lag['send_to_visible_p99_ms']} |"]
    cu = results.get("catchup", {})
    if "entries_per_s" in cu:
        lines += ["", "## Catch-up", "",
                  f"Replica stopped (SIGTERM), {cu['writes']} SETs on the master (redis-benchmark "
                  f"-P 16 -c 50 -d 100, {cu['write_rps']}/s), replica restarted. "
                  "`--repl-backlog-bytes 2GiB`.", "",
                  "| entries | seconds from restart | entries/s | process up after s | link up after s "
                  "| entries/s after link up | full resyncs before/after | partial resync |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| {cu['entries']} | {cu['seconds']} | {cu['entries_per_s']} | "
                  f"{cu['process_start_s']} | {cu['link_up_s']} | {cu['entries_per_s_after_link_up']} | "
                  f"{cu['full_resyncs_before']}/{cu['full_resyncs_after']} | {cu['partial_resync']} |"]
    fs = results.get("fullsync", {})
    if "mb_per_s" in fs:
        lines += ["", "## Full resync", "",
                  f"{fs['keys']} keys x {fs['value_bytes']} B loaded in {fs['load_seconds']} s; a replica "
                  "with an empty data directory started. Rate = snapshot bytes / seconds from its "
                  "start to convergence.", "",
                  "| snapshot MiB | seconds (start -> converged) | MiB/s | master snapshot write s | "
                  "replica 'full resync done' s | MiB/s by replica log | digests equal |",
                  "|---|---|---|---|---|---|---|",
                  f"| {fs['snapshot_mib']} | {fs['seconds']} | {fs['mb_per_s']} | "
                  f"{fs['snapshot_write_seconds']} | {fs['replica_sync_seconds']} | "
                  f"{fs['mb_per_s_replica_log']} | {fs['digest_match']} |"]
    tp = results.get("throughput", {})
    if "ratio_async" in tp:
        lines += ["", "## Master SET throughput with 2 replicas", "",
                  f"{tp['workload']}, {tp['requests']} requests. redis-server: replicaof, "
                  "appendonly yes, appendfsync always on all three.", "",
                  "Median round of each server; every round's ops/s alongside.", "",
                  "| server | ops/s | p50 ms | p99 ms | ratio to redis | every round ops/s "
                  "| fsyncs/s master, replica 1, replica 2 |",
                  "|---|---|---|---|---|---|---|"]
        for name, key, ratio in (("redis-server + 2 replicas", "redis", 1.0),
                                 ("kvstore async + 2 replicas", "kvstore_async", tp["ratio_async"]),
                                 ("kvstore sync (1 ack) + 2 replicas", "kvstore_sync", tp["ratio_sync"])):
            r = tp[key]
            if r.get("non_ok_replies_estimate"):
                name += f" (about {r['non_ok_replies_estimate']} error replies!)"
            lines.append(f"| {name} | {r['rps']:.0f} | {r['p50_ms']} | {r['p99_ms']} | **{ratio}** | "
                         f"{', '.join(map(str, r.get('rounds_rps', [])))} | "
                         f"{', '.join(map(str, r.get('fsyncs_per_s', []))) or 'n/a'} |")
    errors = {k: v["error"] for k, v in results.items() if isinstance(v, dict) and "error" in v}
    if errors:
        lines += ["", "## Errors", ""] + [f"- {k}: {v.splitlines()[0]}" for k, v in errors.items()]
    issues = results.get("log_issues", [])
    if issues:
        lines += ["", "## Warnings and errors in the kvstore logs", "", "```"] + issues + ["```"]
    (out_dir / f"replication-{stamp}.md").write_text("\n".join(lines) + "\n")
    return out_dir / f"replication-{stamp}.md", rows


# The figure each repeated phase is judged by: its median round is the one reported.
ROUND_FIGURE = {"lag": "p99_ms", "catchup": "entries_per_s"}


def run_rounds(phase, runner, args, workdir, base_port):
    """Runs a phase once, or --rounds times for those in ROUND_FIGURE; returns the median round
    (with every round's figure under "rounds") and all clusters."""
    key = ROUND_FIGURE.get(phase)
    if key is None or args.rounds <= 1:
        return runner(args, workdir, base_port)
    runs, clusters = [], []
    for _ in range(args.rounds):
        res, cl = runner(args, workdir, base_port)
        runs.append(res)
        clusters += cl if isinstance(cl, list) else [cl]
    ordered = sorted(runs, key=lambda r: r[key])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median["rounds"] = [r[key] for r in runs]
    return median, clusters


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--quick", action="store_true", help="shrink every workload ~10x")
    parser.add_argument("--kvstore", default=str(ROOT / "build/src/main/kvstore"))
    parser.add_argument("--out", default=str(ROOT / "bench/results"))
    parser.add_argument("--only", default="lag,catchup,fullsync,throughput")
    parser.add_argument("--base-port", type=int, default=23450)
    parser.add_argument("--lag-rate", type=int, default=3000, help="SETs per second")
    parser.add_argument("--lag-seconds", type=float, default=None, help="default 20 (quick: 3)")
    parser.add_argument("--lag-warmup", type=float, default=1.0)
    parser.add_argument("--lag-poll-us", type=float, default=100,
                        help="least time between two MGET polls of the replica")
    parser.add_argument("--lag-background", action="store_true",
                        help="add unthrottled redis-benchmark SET load (4 clients) on the master")
    parser.add_argument("--catchup-writes", type=int, default=None, help="default 1000000")
    parser.add_argument("--full-resync-mb", type=float, default=None, help="default 1024 (quick: 100)")
    parser.add_argument("--tput-requests", type=int, default=None, help="default 200000")
    parser.add_argument("--keep-logs", action="store_true", help="keep the pods' data and logs")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of lag, catchup and throughput")
    args = parser.parse_args()
    q = args.quick
    args.lag_seconds = args.lag_seconds or (3 if q else 20)
    args.catchup_writes = args.catchup_writes or (100000 if q else 1000000)
    args.full_resync_mb = args.full_resync_mb or (100 if q else 1024)
    args.tput_requests = args.tput_requests or (20000 if q else 200000)
    phases = [p.strip() for p in args.only.split(",") if p.strip()]
    if not Path(args.kvstore).exists():
        sys.exit(f"no kvstore binary at {args.kvstore} (use --kvstore)")

    started = time.monotonic()
    meta = {"quick": q, "machine": machine(), "kvstore": args.kvstore,
            "params": {k: v for k, v in vars(args).items() if k not in ("out",)}}
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H-%M-%SZ")
    meta["time"] = stamp
    workdir = tempfile.mkdtemp(prefix="kvstore-repl-bench-")
    results, issues = {}, []
    runners = {"lag": phase_lag, "catchup": phase_catchup, "fullsync": phase_fullsync,
               "throughput": phase_throughput}
    try:
        base_port = choose_base_port(args.base_port)
        for phase in phases:
            print(f"== {phase} ...", flush=True)
            t = time.monotonic()
            try:
                res, clusters = run_rounds(phase, runners[phase], args, workdir, base_port)
                results[phase] = res
            except (BenchError, RespError, OSError, subprocess.SubprocessError) as e:
                results[phase] = {"error": f"{type(e).__name__}: {e}"}
                clusters = []
                print(f"   FAILED: {e}", flush=True)
            for cl in clusters if isinstance(clusters, list) else [clusters]:
                issues += [f"[{phase}] {line}" for line in cl.log_issues()]
            # Clusters whose phase failed: scan whatever logs exist under the workdir.
            if "error" in results[phase]:
                for log in sorted(Path(workdir).glob(f"{phase}-*/kvstore-*.log")):
                    for line in log.read_text(errors="replace").splitlines():
                        if re.search(r"\b(WARN|ERROR)\b", line):
                            issues.append(f"[{phase}] {log.name}: {line}")
            print(f"   {json.dumps(results[phase])[:600]}  ({time.monotonic() - t:.0f}s)", flush=True)
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        if args.keep_logs:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["log_issues"] = issues[:60]
    meta["seconds"] = round(time.monotonic() - started)
    md, rows = write_report(Path(args.out), stamp, meta, results)
    print()
    print(md.read_text())
    print(f"wrote {md} and .json")


if __name__ == "__main__":
    main()
