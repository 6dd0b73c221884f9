"""Interoperability: real third-party SOCKS clients (curl, ncat, Dante, proxychains, Python
libraries) against our server, over loopback only."""
