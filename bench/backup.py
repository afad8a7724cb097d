#!/usr/bin/env python3
"""kvstore backup benchmark: backup and restore throughput for a data set of about 1 GiB, and the
source's write throughput during a backup compared with the same load without one.

1. load     the source (a local kvstore master, fsync always) gets --mb MiB of 1000-byte values
            through redis-cli --pipe.
2. writes   redis-benchmark -t set -d 100 -c 50 -r 1000000 runs against the source for the rest
            of the run. Writes/s = growth of master_repl_offset (one entry per SET) over a
            window: before the backup (--window seconds), during it, and after it.
3. backup   `kvctl backup --out FILE` while those writes run: MB/s = file bytes / wall time
            (the server writes its snapshot file from one LMDB read transaction, then streams
            it). The LMDB file (db/data.mdb) and kvstore_map_used_bytes are sampled before and
            after: the growth that the read transaction caused.
4. restore  `kvctl restore FILE` into a new, empty master (online), and `kvstore restore
            --from FILE --data-dir DIR` (offline): MB/s = snapshot bytes / wall time. The
            restored master's DIGEST must equal the digest the backup was taken at; that is
            checked by the integration tests, here only the key count is checked.

Writes bench/results/backup-<UTC time>.{md,json}.

Usage:
  bench/backup.py [--quick] [--mb 1024] [--window 10] [--kvstore PATH] [--kvctl PATH]
--quick: 64 MiB and 3 s windows (a smoke run; its figures are not the benchmark's).
"""
import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROOT, free_port, wait_ready  # noqa: E402  (shared with the core benchmark)

PROCS = []


def start(binary, data, log):
    port = free_port()
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--data-dir",
                             str(data), "--admin-port", "0", "--log-level", "info"],
                            stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "POD_NAME": "kvstore-0", "MASTER_ORDINAL": "0"})
    PROCS.append(proc)
    wait_ready(port, proc)
    return proc, port


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def info(port):
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO"], capture_output=True, text=True,
                         timeout=30).stdout
    return dict(line.split(":", 1) for line in out.splitlines() if ":" in line)


def seq(port):
    return int(info(port)["master_repl_offset"])


def load(port, mb):
    """--mb MiB of 1000-byte values under keys key:00000000..., via redis-cli --pipe."""
    keys = mb * 1024 * 1024 // 1000
    value = b"v" * 1000
    proc = subprocess.Popen(["redis-cli", "-p", str(port), "--pipe"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL)
    batch = []
    for i in range(keys):
        key = b"key:%010d" % i
        batch.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1000\r\n%s\r\n" % (len(key), key, value))
        if len(batch) == 10000:
            proc.stdin.write(b"".join(batch))
            batch = []
    proc.stdin.write(b"".join(batch))
    proc.stdin.close()
    if proc.wait() != 0:
        sys.exit("loading failed")
    return keys


def writes_per_second(port, seconds):
    start_seq, start = seq(port), time.perf_counter()
    time.sleep(seconds)
    return (seq(port) - start_seq) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--window", type=float, default=10)
    parser.add_argument("--kvstore", default=str(ROOT / "build/src/main/kvstore"))
    parser.add_argument("--kvctl", default=str(ROOT / "build/tools/kvctl/kvctl"))
    parser.add_argument("--workdir", default=None, help="where data and the backup go (/tmp)")
    args = parser.parse_args()
    if args.quick:
        args.mb, args.window = 64, 3
    work = Path(tempfile.mkdtemp(prefix="kvstore-backup-bench-", dir=args.workdir))
    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": f"{platform.node()} {os.cpu_count()} cores", "quick": args.quick,
               "mb": args.mb}
    bench = None
    try:
        log = open(work / "source.log", "ab")
        source, port = start(args.kvstore, work / "source", log)
        t = time.perf_counter()
        results["keys"] = load(port, args.mb)
        results["load_seconds"] = round(time.perf_counter() - t, 2)
        print(f"loaded {results['keys']} keys ({args.mb} MiB) in {results['load_seconds']} s",
              flush=True)

        bench = subprocess.Popen(["redis-benchmark", "-p", str(port), "-t", "set", "-d", "100",
                                  "-c", "50", "-r", "1000000", "-n", "1000000000", "-q"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        PROCS.append(bench)
        time.sleep(1)
        used0 = int(info(port).get("kvstore_map_used_bytes", 0))
        t = time.perf_counter()
        results["writes_per_s_before"] = round(writes_per_second(port, args.window))
        # The map's growth from the writes alone, for comparison with the growth during the backup.
        results["map_used_growth_per_s_without_backup"] = round(
            (int(info(port).get("kvstore_map_used_bytes", 0)) - used0) / (time.perf_counter() - t))
        mdb = work / "source/db/data.mdb"
        size_before = mdb.stat().st_size
        used_before = int(info(port).get("kvstore_map_used_bytes", 0))
        file = work / "backup.kvbackup"
        seq0, t = seq(port), time.perf_counter()
        out = subprocess.run([args.kvctl, "--port", str(port), "backup", "--out", str(file)],
                             capture_output=True, text=True, timeout=7200)
        backup_seconds = time.perf_counter() - t
        if out.returncode != 0:
            sys.exit("backup failed: " + out.stderr)
        results["writes_per_s_during"] = round((seq(port) - seq0) / backup_seconds)
        results["backup_bytes"] = file.stat().st_size
        results["backup_seconds"] = round(backup_seconds, 2)
        results["backup_mb_per_s"] = round(file.stat().st_size / backup_seconds / 1e6, 1)
        results["lmdb_file_growth_bytes"] = mdb.stat().st_size - size_before
        results["map_used_growth_bytes"] = int(info(port).get("kvstore_map_used_bytes", 0)) - used_before
        results["writes_per_s_after"] = round(writes_per_second(port, args.window))
        bench.send_signal(signal.SIGINT)
        bench.wait(timeout=30)
        print(out.stdout.strip(), flush=True)
        for line in (work / "source.log").read_text(errors="replace").splitlines():
            if "snapshot written" in line:
                results["snapshot_file_line"] = line.strip()
        stop(source)

        target, tport = start(args.kvstore, work / "target", open(work / "target.log", "ab"))
        t = time.perf_counter()
        out = subprocess.run([args.kvctl, "--port", str(tport), "restore", str(file)],
                             capture_output=True, text=True, timeout=7200)
        restore_seconds = time.perf_counter() - t
        if out.returncode != 0:
            sys.exit("restore failed: " + out.stderr)
        results["restore_online_seconds"] = round(restore_seconds, 2)
        results["restore_online_mb_per_s"] = round(results["backup_bytes"] / restore_seconds / 1e6, 1)
        dbsize = subprocess.run(["redis-cli", "-p", str(tport), "DBSIZE"], capture_output=True,
                                text=True).stdout.strip()
        results["restored_keys"] = int(dbsize)
        stop(target)

        t = time.perf_counter()
        out = subprocess.run([args.kvstore, "restore", "--from", str(file), "--data-dir",
                              str(work / "offline")], capture_output=True, text=True, timeout=7200)
        if out.returncode != 0:
            sys.exit("offline restore failed: " + out.stderr)
        offline_seconds = time.perf_counter() - t
        results["restore_offline_seconds"] = round(offline_seconds, 2)
        results["restore_offline_mb_per_s"] = round(results["backup_bytes"] / offline_seconds / 1e6, 1)
    finally:
        for proc in PROCS:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H-%M-%SZ")
    out_dir = ROOT / "bench/results"
    out_dir.mkdir(exist_ok=True)
    base = out_dir / f"backup-{stamp}"
    base.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    r = results
    mib = 1 << 20
    md = f"""# Backup benchmark {r['date']}{' (--quick: smoke run, not the benchmark)' if r['quick'] else ''}

Machine: {r['machine']}. Data set: {r['keys']} keys x 1000-byte values ({r['mb']} MiB), loaded in
{r['load_seconds']} s. Writes during the run: redis-benchmark -t set -d 100 -c 50 -r 1000000.

| measure | value |
|---|---|
| backup file | {r['backup_bytes'] / mib:.1f} MiB |
| backup (kvctl backup, under writes) | {r['backup_seconds']} s, {r['backup_mb_per_s']} MB/s |
| restore online (kvctl restore into an empty master) | {r['restore_online_seconds']} s, {r['restore_online_mb_per_s']} MB/s |
| restore offline (kvstore restore) | {r['restore_offline_seconds']} s, {r['restore_offline_mb_per_s']} MB/s |
| source writes/s before the backup | {r['writes_per_s_before']} |
| source writes/s during the backup | {r['writes_per_s_during']} ({100 * r['writes_per_s_during'] / max(r['writes_per_s_before'], 1):.0f} %) |
| source writes/s after the backup | {r['writes_per_s_after']} |
| LMDB data.mdb growth during the backup | {r['lmdb_file_growth_bytes'] / mib:.1f} MiB |
| kvstore_map_used_bytes growth during the backup | {r['map_used_growth_bytes'] / mib:.1f} MiB (writes alone, same load: {r['map_used_growth_per_s_without_backup'] * r['backup_seconds'] / mib:.1f} MiB in as long) |
| keys restored | {r['restored_keys']} (loaded {r['keys']} plus the benchmark's) |
"""
    base.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {base}.md and .json")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
