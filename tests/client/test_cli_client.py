"""`socks5d connect` and `socks5d udp`: the client library behind stdin and stdout.

Run as real subprocesses (`python -m socks5d ...`) with stdin piped, as ssh runs a
ProxyCommand; our server runs on a thread of the test process.
"""

from __future__ import annotations

import subprocess
import sys

from .conftest import HTTP_BODY, HTTP_REQUEST, closed_port, fetch

#: Upper bound for one run of the command; each finishes well within it.
COMMAND_TIMEOUT = 20.0


def socks5d(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "socks5d", *args],
        input=stdin,
        capture_output=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def test_connect_pipes_stdin_to_the_destination_and_its_answer_to_stdout(
    socks_server, http_origin
) -> None:
    host, port = http_origin
    direct = fetch(http_origin, HTTP_REQUEST)
    done = socks5d(
        "connect", "--proxy", socks_server.url("socks5h"), host, str(port), stdin=HTTP_REQUEST
    )
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout == direct
    assert done.stdout.endswith(HTTP_BODY)
    record = socks_server.wait_records(1)[0]
    assert (record["destination"], record["bytes_up"]) == (f"{host}:{port}", len(HTTP_REQUEST))


def test_connect_with_repeated_proxy_goes_through_the_chain(start_server, http_origin) -> None:
    first, second = start_server(), start_server()
    _, port = http_origin
    done = socks5d(
        "connect",
        "--proxy",
        first.url("socks5"),
        "--proxy",
        second.url("socks4a"),
        "localhost",
        str(port),
        stdin=HTTP_REQUEST,
    )
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout == fetch(http_origin, HTTP_REQUEST)
    assert first.wait_records(1)[0]["destination"] == f"127.0.0.1:{second.port}"
    inner = second.wait_records(1)[0]
    assert (inner["protocol"], inner["destination"]) == ("socks4a", f"localhost:{port}")


def test_udp_sends_each_stdin_line_as_a_datagram_and_prints_the_replies(
    socks_server, udp_echo
) -> None:
    host, port = udp_echo()
    done = socks5d(
        "udp", "--proxy", socks_server.url(), host, str(port), stdin=b"first\nsecond line\n"
    )
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout == b"first\nsecond line\n"
    record = socks_server.wait_records(1)[0]
    assert (record["command"], record["bytes_up"]) == ("udp_associate", len(b"firstsecond line"))


def test_connect_to_a_refused_destination_exits_1_with_the_reason_on_stderr(socks_server) -> None:
    port = closed_port()
    done = socks5d("connect", "--proxy", socks_server.url(), "127.0.0.1", str(port))
    assert done.returncode == 1
    assert done.stdout == b""
    assert done.stderr.decode().strip() == (
        f"socks5d: proxy 127.0.0.1:{socks_server.port} replied X'05' Connection refused "
        f"for 127.0.0.1:{port}"
    )


def test_connect_with_a_bad_proxy_url_exits_1_naming_the_scheme() -> None:
    done = socks5d("connect", "--proxy", "ftp://127.0.0.1:3128", "127.0.0.1", "80")
    assert done.returncode == 1
    assert b"unsupported proxy scheme 'ftp'" in done.stderr
