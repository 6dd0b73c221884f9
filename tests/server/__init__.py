"""Server tests over loopback: raw sockets against a `socks5d.server.Server`."""
