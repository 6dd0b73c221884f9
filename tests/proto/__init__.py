"""Tests of the sans-I/O protocol package `socks5d.proto`."""
