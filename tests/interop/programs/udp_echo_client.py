"""A plain UDP client for running under socksify: send each message to HOST PORT with
sendto(), read the answer with recvfrom(), print one JSON line per answer.

    socksify python udp_echo_client.py 127.0.0.1 5353 first second

It knows nothing of SOCKS: Dante's libdsocks intercepts sendto()/recvfrom() (which Python's
socket methods call straight through libc) and carries the datagrams over UDP ASSOCIATE.
"""

from __future__ import annotations

import json
import socket
import sys

#: Seconds to wait for each answer.
TIMEOUT = 5.0


def main(argv: list[str]) -> int:
    host, port, *messages = argv
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        for message in messages:
            sock.sendto(message.encode(), (host, int(port)))
            data, sender = sock.recvfrom(65535)
            print(json.dumps({"data": data.decode(), "from": list(sender)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
