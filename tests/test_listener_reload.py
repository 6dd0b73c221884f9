"""SIGHUP changes the listen addresses of a running `socks5d serve`: added ones are bound,
removed ones closed (their tunnels go on), unchanged ones keep their socket; a new address
that cannot be bound refuses the reload whole. And a start whose address is taken names it.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from serving import IO_TIMEOUT, Processes, ServeProcess, echo_pair, exchange
from socks5d.client import sync

ADDRESS_IN_USE = "[Errno 98] Address already in use"


def write_listen(config: Path, *addresses: str) -> None:
    config.write_text(f"listen = [{', '.join(f'{a!r}' for a in addresses)}]\n".replace("'", '"'))


def served(address: tuple[str, int], destination: socket.socket) -> bool:
    """A CONNECT through `address` to `destination` works (and is closed again)."""
    with sync.connect(
        *destination.getsockname()[:2], proxy=f"socks5://{address[0]}:{address[1]}"
    ) as client:
        far = echo_pair(destination, client)
        with far:
            exchange(client, far, b"probe")
    return True


def refused(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=IO_TIMEOUT).close()
    except ConnectionRefusedError:
        return True
    return False


def reload(server: ServeProcess) -> dict[str, object]:
    """SIGHUP; the line that says how it went."""
    server.signal(signal.SIGHUP)
    return server.wait_for(
        lambda e: e["logger"] == "socks5d.cli" and e["message"].startswith(("reload", "config"))
    )


def test_sighup_adds_and_removes_listeners_and_a_removed_ones_tunnel_goes_on(
    serve: Processes, tmp_path: Path, destination: socket.socket
) -> None:
    config = tmp_path / "socks5d.toml"
    write_listen(config, "127.0.0.1:0", "127.0.0.3:0")
    server = serve("--config", str(config))
    kept, removed = server.listeners()
    client = sync.connect(
        *destination.getsockname()[:2], proxy=f"socks5://{removed[0]}:{removed[1]}"
    )
    with client, echo_pair(destination, client) as far:
        exchange(client, far, b"before")

        write_listen(config, "127.0.0.1:0", "127.0.0.2:0")
        assert reload(server)["message"] == "configuration reloaded"
        lines = [e["message"] for e in server.entries[-3:]]
        assert lines[0] == f"stopped listening on {removed[0]}:{removed[1]}"
        assert lines[1].startswith("listening on 127.0.0.2:")
        added = server.listeners()[-1]
        assert added[0] == "127.0.0.2"

        assert refused(removed)
        assert served(kept, destination)  # the same socket, the same port
        assert served(added, destination)
        exchange(client, far, b"after")  # the tunnel opened on the removed listener
    records = [server.access_record() for _ in range(3)]
    assert sorted(r["listener"] for r in records) == sorted(
        f"{h}:{p}" for h, p in (kept, added, removed)
    )
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_a_reload_whose_new_address_is_taken_keeps_every_old_listener(
    serve: Processes, tmp_path: Path, destination: socket.socket
) -> None:
    config = tmp_path / "socks5d.toml"
    write_listen(config, "127.0.0.1:0", "127.0.0.3:0")
    server = serve("--config", str(config))
    first, second = server.listeners()
    with socket.create_server(("127.0.0.2", 0)) as taken:
        port = taken.getsockname()[1]
        write_listen(config, "127.0.0.1:0", f"127.0.0.2:{port}")  # drops 127.0.0.3 too
        outcome = reload(server)
    assert outcome["level"] == "error"
    assert outcome["message"] == (
        "reload failed, keeping the previous configuration: "
        f"cannot listen on 127.0.0.2:{port}: {ADDRESS_IN_USE}"
    )
    assert served(first, destination) and served(second, destination)
    assert not any(e["message"].startswith("stopped listening") for e in server.entries)
    # and a later reload that can bind goes through
    write_listen(config, "127.0.0.1:0")
    assert reload(server)["message"] == "configuration reloaded"
    assert refused(second)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_a_start_on_a_taken_address_names_it_and_exits_1(serve: Processes) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = serve("--listen", "127.0.0.1:0", "--listen", f"127.0.0.1:{port}", ready=False)
        assert server.wait_exit() == 1
    assert f"cannot start: cannot listen on 127.0.0.1:{port}: {ADDRESS_IN_USE}" in server.rest
