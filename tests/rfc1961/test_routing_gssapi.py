"""A `[[route]]` whose upstream wants GSS-API (`?gssapi=LEVEL`): socks5d, serving its own
client without authentication, goes out through Dante's sockd with Kerberos, at each level;
sockd's log shows the session at that level, with the principal of the server's credentials
(the test realm's alice, in the process's ccache).
"""

from __future__ import annotations

import pytest

from .dante import LEVELS
from .test_client_to_dante import StartSockd, assert_session, connect_session, echo, sockd
from .traffic import ALICE, EXPECTED, PAYLOAD, echo_payload, gssapi_url

__all__ = ["echo", "sockd"]  # fixtures


@pytest.mark.parametrize("level", LEVELS)
def test_connect_routed_through_a_gssapi_upstream(
    level: str, sockd: StartSockd, echo, start_server
) -> None:
    upstream = sockd(level)
    front = start_server(route=[{"via": [gssapi_url(upstream.port, level)]}])
    assert echo_payload("sync", front.url("socks5h"), echo, PAYLOAD) == EXPECTED
    assert_session(connect_session(upstream, echo), level, len(PAYLOAD), len(PAYLOAD))
    assert upstream.gssapi_session() == (level, ALICE)
    assert front.wait_records(1)[0]["upstream"].endswith(f"gssapi={level}&service=rcmd")
