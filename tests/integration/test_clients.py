"""Stock Redis clients against kvstore: interactive redis-cli in a pseudo-terminal, redis-benchmark,
and inline commands typed over a raw socket (what telnet/nc users send)."""
import fcntl
import os
import re
import select
import socket
import struct
import subprocess
import termios
import time

import pytest

from conftest import read_until_closed


def read_pty(fd, done, timeout):
    """Reads from the pty master until done(output) or timeout; returns the output.
    Answers linenoise's cursor position queries (ESC [6n) as an 80-column terminal would."""
    deadline = time.monotonic() + timeout
    out = b""
    while not done(out):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        for _ in range(chunk.count(b"\x1b[6n")):
            os.write(fd, b"\x1b[1;80R")
        out += chunk
    return out


@pytest.mark.parametrize("term", ["dumb", "xterm"])
def test_redis_cli_interactive(server, term):
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = dict(os.environ, TERM=term, HOME=str(server.data_dir.parent))
    proc = subprocess.Popen(["redis-cli", "-h", "127.0.0.1", "-p", str(server.port)],
                            stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
                            start_new_session=True)
    os.close(slave)
    prompt = f"127.0.0.1:{server.port}>".encode()
    transcript = b""

    def type_line(line, expect):
        # Type only at a fresh prompt: linenoise flushes input typed before it is ready.
        nonlocal transcript
        os.write(master, line + b"\r")
        out = read_pty(master, lambda o: expect in o and prompt in o[o.index(expect):], 10)
        transcript += out
        assert expect in out, f"typed {line!r}, expected {expect!r}: {transcript!r}"

    try:
        transcript += read_pty(master, lambda o: prompt in o, 10)
        assert prompt in transcript, f"no prompt from redis-cli: {transcript!r}"
        type_line(b"set a 1", b"OK")
        type_line(b"get a", b'"1"')
        os.write(master, b"quit\r")
        transcript += read_pty(master, lambda o: False, 5)  # until redis-cli closes the pty
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = transcript.decode(errors="replace")
    assert "ERR" not in text and "rror" not in text, text
    assert proc.returncode == 0, text
    assert server.client().get("a") == b"1"


def benchmark_lines(output):
    """redis-benchmark -q redraws progress with CR; keep only final result lines."""
    lines = []
    for raw in re.split(r"[\r\n]", output):
        line = raw.strip()
        if "requests per second" in line:
            lines.append(line)
    return lines


@pytest.mark.parametrize("pipeline", [None, 16])
def test_redis_benchmark(server, pipeline):
    args = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(server.port),
            "-t", "set,get,incr,mset", "-n", "5000", "-c", "20", "-q"]
    if pipeline:
        args += ["-P", str(pipeline)]
    result = subprocess.run(args, capture_output=True, timeout=120)
    output = result.stdout.decode(errors="replace")
    errors = result.stderr.decode(errors="replace")
    assert result.returncode == 0, output + errors
    lines = benchmark_lines(output)
    for test in ("SET", "GET", "INCR", "MSET"):
        assert any(line.startswith(test) for line in lines), f"no result for {test}: {output!r}"
    assert len(lines) == 4, lines
    assert "WARNING" not in output + errors, output + errors
    assert "ERR" not in output + errors, output + errors
    client = server.client()
    assert client.ping() is True
    # redis-benchmark's INCR test uses this one key; it may send a few requests past -n (as it
    # does against redis-server), but never fewer.
    counter = int(client.get("counter:__rand_int__"))
    assert 5000 <= counter <= 5000 + 20 * (pipeline or 1), counter
    assert client.strlen("key:__rand_int__") == 3  # the default 3-byte payload
    assert client.dbsize() >= 2


def test_inline_commands(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        def ask(line, expect):
            s.sendall(line)
            got = b""
            deadline = time.monotonic() + 5
            while len(got) < len(expect) and time.monotonic() < deadline:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
            assert got == expect, f"{line!r}: expected {expect!r}, got {got!r}"

        ask(b"SET k v\r\n", b"+OK\r\n")
        ask(b"GET k\r\n", b"$1\r\nv\r\n")
        ask(b"SET \"a b\" 'c d'\r\n", b"+OK\r\n")
        ask(b"GET \"a b\"\r\n", b"$3\r\nc d\r\n")
        ask(b"set lf-only yes\n", b"+OK\r\n")
        ask(b"  get   lf-only  \r\n", b"$3\r\nyes\r\n")
        ask(b"SET esc \"x\\x41\\ty\\n\"\r\n", b"+OK\r\n")
        ask(b"GET esc\r\n", b"$5\r\nxA\ty\n\r\n")
        ask(b"\r\n\r\nPING\r\n", b"+PONG\r\n")  # empty lines are skipped
        ask(b"INCR n\r\nINCR n\r\nGET n\r\n", b":1\r\n:2\r\n$1\r\n2\r\n")
        ask(b"GET missing\r\n", b"$-1\r\n")
        ask(b"nosuch arg\r\n",
            b"-ERR unknown command 'nosuch', with args beginning with: 'arg' \r\n")
        # Unbalanced quotes are a protocol error: reply, then close.
        s.sendall(b"SET \"open value\r\n")
        data, closed = read_until_closed(s, timeout=5)
        assert data.startswith(b"-ERR Protocol error"), data
        assert closed
    client = server.client()
    assert client.get("a b") == b"c d"
    assert client.get("esc") == b"xA\ty\n"
    assert client.exists("open value", "\"open") == 0
