from __future__ import annotations

import socket

from socks5d.proto import (
    NEED_DATA,
    Address,
    AuthMethod,
    ClientConnection,
    Command,
    CommandReply,
    CommandRequest,
    Greeting,
    Reply,
)


def _handshake(sock: socket.socket, destination: Address) -> CommandReply:
    client = ClientConnection()
    sock.sendall(client.send(Greeting((AuthMethod.NO_AUTHENTICATION_REQUIRED,))))
    while True:
        event = client.next_event()
        if event is NEED_DATA:
            client.receive_data(sock.recv(4096))
        elif isinstance(event, CommandReply):
            return event
        else:
            sock.sendall(client.send(CommandRequest(Command.CONNECT, destination)))


def test_connect_relays_to_an_echo_server(socks_server) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        destination = Address.from_host("127.0.0.1", listener.getsockname()[1])
        with socket.create_connection(socks_server.address, timeout=5) as sock:
            reply = _handshake(sock, destination)
            assert reply.reply == Reply.SUCCEEDED
            peer, _ = listener.accept()
            with peer:
                assert reply.bound.port == peer.getpeername()[1]
                sock.sendall(b"ping")
                assert peer.recv(4) == b"ping"
    record = socks_server.wait_records(1)[0]
    assert record["reply"] == "succeeded"
    assert record["bytes_up"] == 4
