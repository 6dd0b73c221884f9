"""Relay tests: the seam (`socks5d.relay`), its engine table, and each engine's promises."""
