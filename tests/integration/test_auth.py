"""Password protection (KVSTORE_PASSWORD): what an unauthenticated client may and may not do,
AUTH and HELLO AUTH, and redis-cli, redis-py and kvctl with a password."""
import pytest
import redis

from conftest import RespConn, RespError

PASSWORD = "secret"


@pytest.fixture
def secured(make_server):
    server = make_server(env={"KVSTORE_PASSWORD": PASSWORD})
    client = server.client(password=PASSWORD)
    client.set("k", "v")
    client.close()
    return server


def test_unauthenticated_commands_are_refused(secured):
    with RespConn(secured.port) as conn:
        assert str(conn.call("GET", "k")) == "NOAUTH Authentication required."
        assert str(conn.call("SET", "k", "x")) == "NOAUTH Authentication required."
        assert str(conn.call("PING")) == "NOAUTH Authentication required."
        # In redis-server 7's order: an unknown command or a wrong arity comes first.
        assert str(conn.call("nosuchcommand", "a")).startswith("ERR unknown command 'nosuch")
        assert str(conn.call("GET")) == "ERR wrong number of arguments for 'get' command"
        assert str(conn.call("INFO")) == "NOAUTH Authentication required."
        assert conn.call("QUIT") == "OK"
    client = secured.client(password=PASSWORD)
    assert client.get("k") == b"v", "a refused SET must not have written"


@pytest.mark.parametrize("header, error", [
    (b"*11\r\n", b"-ERR Protocol error: unauthenticated multibulk length\r\n"),
    (b"*2\r\n$4\r\nAUTH\r\n$100000000\r\n", b"-ERR Protocol error: unauthenticated bulk length\r\n"),
])
def test_an_unauthenticated_client_cannot_send_a_large_request(secured, header, error):
    """As redis-server (CVE-2021-32675): without the password a request is refused on its
    header, before its body is buffered, so that nobody can make the server hold up to
    max_query_buffer_bytes per connection without logging in."""
    import socket
    from conftest import read_until_closed
    with socket.create_connection(("127.0.0.1", secured.port), timeout=10) as sock:
        sock.sendall(header)
        data, closed = read_until_closed(sock, timeout=5)
    assert data == error and closed, (data, closed)
    # Logged in, the same sizes are fine.
    with RespConn(secured.port) as conn:
        assert conn.call("AUTH", PASSWORD) == "OK"
        assert conn.call("MSET", *[f"k{i}" for i in range(12)]) == "OK"
        assert conn.call("SET", "big", "x" * 100000) == "OK"
    # A password of up to 16 KiB still logs in (the bulk limit is Redis' too).
    with RespConn(secured.port) as conn:
        assert str(conn.call("AUTH", "p" * 16384)).startswith("WRONGPASS")


def test_auth_wrong_then_right(secured):
    with RespConn(secured.port) as conn:
        reply = conn.call("AUTH", "wrong")
        assert isinstance(reply, RespError) and str(reply).startswith("WRONGPASS"), reply
        assert str(conn.call("GET", "k")) == "NOAUTH Authentication required."
        reply = conn.call("AUTH", "bob", PASSWORD)
        assert isinstance(reply, RespError) and str(reply).startswith("WRONGPASS"), reply
        reply = conn.call("AUTH", PASSWORD + "x")
        assert str(reply).startswith("WRONGPASS"), reply
        reply = conn.call("AUTH", PASSWORD[:-1])
        assert str(reply).startswith("WRONGPASS"), reply
        assert conn.call("AUTH", PASSWORD) == "OK"
        assert conn.call("GET", "k") == b"v"
        assert conn.call("SET", "k2", "v2") == "OK"
        assert conn.call("PING") == "PONG"


def test_auth_default_user(secured):
    with RespConn(secured.port) as conn:
        assert conn.call("AUTH", "default", PASSWORD) == "OK"
        assert conn.call("GET", "k") == b"v"


def test_hello_auth(secured):
    with RespConn(secured.port) as conn:
        reply = conn.call("HELLO", "2")
        assert isinstance(reply, RespError) and str(reply).startswith("NOAUTH"), reply
        # As Redis: authentication is checked before the protocol version is switched to.
        reply = conn.call("HELLO", "3")
        assert isinstance(reply, RespError) and str(reply).startswith("NOAUTH"), reply
        reply = conn.call("HELLO", "2", "AUTH", "default", "wrong")
        assert isinstance(reply, RespError) and str(reply).startswith("WRONGPASS"), reply
        assert str(conn.call("GET", "k")) == "NOAUTH Authentication required."
        reply = conn.call("HELLO", "2", "AUTH", "default", PASSWORD, "SETNAME", "h")
        assert isinstance(reply, list), reply
        fields = dict(zip(reply[::2], reply[1::2]))
        assert fields[b"proto"] == 2
        assert conn.call("GET", "k") == b"v"
        assert conn.call("CLIENT", "GETNAME") == b"h"
        # RESP3 is refused once authenticated, and its SETNAME does not take effect.
        reply = conn.call("HELLO", "3", "SETNAME", "other")
        assert isinstance(reply, RespError) and str(reply).startswith("NOPROTO"), reply
        assert conn.call("CLIENT", "GETNAME") == b"h"


def test_redis_py_with_password(secured):
    assert secured.client(password=PASSWORD).get("k") == b"v"
    assert secured.client(username="default", password=PASSWORD).get("k") == b"v"
    with pytest.raises(redis.ResponseError, match="WRONGPASS"):
        secured.client(password="nope").get("k")
    with pytest.raises(redis.AuthenticationError):
        secured.client().get("k")


def test_redis_cli_with_password(secured):
    assert secured.cli("-a", PASSWORD, "--no-auth-warning", "get", "k").strip() == "v"
    assert secured.cli("-a", PASSWORD, "--no-auth-warning", "set", "cli", "1").strip() == "OK"
    assert secured.client(password=PASSWORD).get("cli") == b"1"
    out = secured.cli("get", "k", check=False)
    assert out.startswith("NOAUTH"), out


def test_kvctl_with_password_flag(secured):
    result = secured.kvctl("--password", PASSWORD, "read", "k")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip(b"\n") == b"v"
    result = secured.kvctl("--password", PASSWORD, "put", "fromkvctl", "yes")
    assert result.returncode == 0, result.stderr
    assert secured.client(password=PASSWORD).get("fromkvctl") == b"yes"


def test_kvctl_with_password_env(secured):
    result = secured.kvctl("read", "k", env={"KVSTORE_PASSWORD": PASSWORD})
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip(b"\n") == b"v"


def test_kvctl_without_password_fails(secured):
    result = secured.kvctl("read", "k")
    assert result.returncode != 0
    assert result.stdout == b""
    assert b"NOAUTH" in result.stderr or b"auth" in result.stderr.lower(), result.stderr
    result = secured.kvctl("--password", "wrong", "read", "k")
    assert result.returncode != 0
    assert result.stdout == b""
    assert result.stderr.strip(), "kvctl must say why it failed"


def test_auth_without_password_configured(server):
    with RespConn(server.port) as conn:
        reply = conn.call("AUTH", "x")
        assert isinstance(reply, RespError), reply
        assert str(reply).startswith("ERR") and "without any password configured" in str(reply)
        # As Redis 7's default user without a password: a login naming it succeeds with any
        # password (clients configured with user "default" connect); other users do not exist.
        assert conn.call("AUTH", "default", "x") == "OK"
        reply = conn.call("AUTH", "someone", "x")
        assert isinstance(reply, RespError) and str(reply).startswith("WRONGPASS"), reply
        assert isinstance(conn.call("HELLO", "2", "AUTH", "default", "x"), list)
        assert conn.call("PING") == "PONG"
        assert conn.call("SET", "a", "1") == "OK"
