"""Whether a client may start a session at all, decided before its first byte is read: the
login throttle's block, the `[[client]]` rules, the session and handshake slots.
"""

from __future__ import annotations

import time

from socks5d.server.context import IPAddress, Services


def admit(services: Services, client: IPAddress, listener: str) -> str | None:
    """None when `client` may start a session on `listener`, else why not. On success the
    session owns a session slot and a handshake slot, and gives them back.
    """
    stats = services.stats
    if services.throttle.blocked(client, time.monotonic()):
        stats.limit_refusal("blocked_client")
        return "blocked after repeated failed logins"
    decision = services.rules.check_client(client, listener)
    if not decision.allowed:
        stats.rule_block("client")
        return f"blocked by {decision.rule or 'rules.client_default'}"
    refusal = services.session_slots.acquire(client)
    if refusal is not None:
        stats.limit_refusal("sessions")
        return f"sessions: {refusal}"
    refusal = services.handshake_slots.acquire(client)
    if refusal is not None:
        services.session_slots.release(client)
        stats.limit_refusal("handshakes")
        return f"handshakes in progress: {refusal}"
    return None
