"""Proxy addresses: `socks5://user:pass@host:port` URLs and their keyword twin."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from socks5d.constants import ProtectionLevel

#: URL scheme -> (SOCKS version, whether the proxy resolves names); `http` is HTTP/1.1
#: CONNECT (version 0), which always sends the name.
SCHEMES: dict[str, tuple[int, bool]] = {
    "socks5": (5, False),
    "socks5h": (5, True),
    "socks4": (4, False),
    "socks4a": (4, True),
    "http": (0, True),
}
#: The `version` of an HTTP CONNECT proxy.
HTTP = 0
DEFAULT_PORT = 1080


#: URL query spellings of the protection levels (`?gssapi=integrity`).
LEVELS = {level.name.lower(): level for level in ProtectionLevel if level != 3}


@dataclass(frozen=True, slots=True)
class GssapiOptions:
    """GSS-API (RFC 1961) toward one proxy, with the credentials in the default ccache.

    Args:
        level: the protection level required; a proxy that agrees to any other is left.
        service: the service part of the proxy's principal (Dante's default is "rcmd").
        host: the host part; by default the proxy's host as given.
        unwrapped_level: send the level octet unwrapped and expect the answer so (the NEC
            variant; RFC 1961 wraps it).
    """

    level: ProtectionLevel = ProtectionLevel.CONFIDENTIALITY
    service: str = "rcmd"
    host: str | None = None
    unwrapped_level: bool = False


@dataclass(frozen=True, slots=True)
class Proxy:
    """One SOCKS proxy to go through.

    Args:
        host: the proxy's host name or IP address (IPv6 without brackets).
        port: the proxy's port.
        version: 5 or 4, or `HTTP` (0): an HTTP/1.1 proxy, asked with CONNECT (RFC 9110
            §9.3.6), which carries CONNECT only; `username`/`password` go as Basic
            credentials.
        remote_dns: send destination names to the proxy to resolve (`socks5h`, `socks4a`)
            instead of resolving them here (`socks5`, `socks4`).
        username, password: RFC 1929 credentials (SOCKS5); for SOCKS4 the username is the
            USERID.
        gssapi: authenticate with GSS-API (RFC 1961) only, never another method.
        proxy_protocol: begin the connection with a PROXY protocol header of this version
            (1 text, 2 binary) naming our end as the client, as a load balancer does: for
            tests, and for a proxy that trusts us to (`[proxy_protocol] from`). First hop only.
    """

    host: str
    port: int = DEFAULT_PORT
    version: int = 5
    remote_dns: bool = True
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    gssapi: GssapiOptions | None = None
    proxy_protocol: int | None = None

    def __post_init__(self) -> None:
        if self.proxy_protocol not in (None, 1, 2):
            raise ValueError(f"PROXY protocol version must be 1 or 2, not {self.proxy_protocol}")
        if self.version not in (4, 5, HTTP):
            raise ValueError(f"SOCKS version must be 4 or 5 (or HTTP), not {self.version}")
        if not 0 < self.port <= 0xFFFF:
            raise ValueError(f"port out of range: {self.port}")
        if self.gssapi is not None and self.version != 5:
            raise ValueError("GSS-API needs SOCKS5")
        if self.version == HTTP and not self.remote_dns:
            raise ValueError("an HTTP proxy is always sent the name")

    @classmethod
    def from_url(cls, url: str) -> Proxy:
        """Parse `socks5://[user:pass@]host:port`, `socks5h://`, `socks4://`, `socks4a://`,
        `http://` (an HTTP CONNECT proxy).

        IPv6 literals go in brackets (`socks5://[::1]:1080`); user and password may be
        percent-encoded. The port defaults to 1080. GSS-API options go in the query:
        `?gssapi=LEVEL` (clear, integrity, confidentiality) with optional `service=NAME`,
        `service_host=HOST` and `unwrapped_level=1`.
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise ValueError(
                f"unsupported proxy scheme {parts.scheme!r} (one of {', '.join(SCHEMES)})"
            )
        if not parts.hostname:
            raise ValueError(f"no proxy host in {url!r}")
        version, remote_dns = SCHEMES[scheme]
        return cls(
            gssapi=_gssapi_options(parts.query),
            host=parts.hostname,
            port=DEFAULT_PORT if parts.port is None else parts.port,
            version=version,
            remote_dns=remote_dns,
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )

    @property
    def query(self) -> str:
        """The URL query for `gssapi` ("" without)."""
        options = self.gssapi
        if options is None:
            return ""
        fields = {"gssapi": options.level.name.lower(), "service": options.service}
        if options.host is not None:
            fields["service_host"] = options.host
        if options.unwrapped_level:
            fields["unwrapped_level"] = "1"
        return "?" + urlencode(fields)

    @property
    def url(self) -> str:
        """The proxy as a URL (password shown as `***`)."""
        scheme = {names: scheme for scheme, names in SCHEMES.items()}
        credentials = ""
        if self.username is not None:
            user = quote(self.username, safe="")
            credentials = user + (":***" if self.password is not None else "") + "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        netloc = f"{credentials}{host}:{self.port}"
        return f"{scheme[(self.version, self.remote_dns)]}://{netloc}{self.query}"


def _gssapi_options(query: str) -> GssapiOptions | None:
    fields = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    unknown = set(fields) - {"gssapi", "service", "service_host", "unwrapped_level"}
    if unknown:
        raise ValueError(f"unknown proxy URL parameter {sorted(unknown)[0]!r}")
    if "gssapi" not in fields:
        if fields:
            raise ValueError("service, service_host and unwrapped_level need gssapi=LEVEL")
        return None
    level = LEVELS.get(fields["gssapi"].lower())
    if level is None:
        raise ValueError(f"gssapi={fields['gssapi']!r}: one of {', '.join(LEVELS)}")
    return GssapiOptions(
        level=level,
        service=fields.get("service") or "rcmd",
        host=fields.get("service_host") or None,
        unwrapped_level=fields.get("unwrapped_level", "0") not in ("", "0", "false", "no"),
    )


ProxyLike = Proxy | str


def as_proxy(proxy: ProxyLike) -> Proxy:
    """A `Proxy` from a `Proxy` or a URL.

    Raises:
        TypeError: `proxy` is neither (None, say).
        ValueError: the URL is not one of a proxy.
    """
    if isinstance(proxy, Proxy):
        return proxy
    if not isinstance(proxy, str):
        raise TypeError(
            f"proxy must be a proxy URL such as 'socks5h://127.0.0.1:1080' or a Proxy, "
            f"not {proxy!r}"
        )
    return Proxy.from_url(proxy)


def as_chain(proxy: ProxyLike | list[ProxyLike] | tuple[ProxyLike, ...]) -> list[Proxy]:
    """A list of proxies to go through in order, from one proxy or several."""
    if isinstance(proxy, list | tuple):
        if not proxy:
            raise ValueError("empty proxy chain")
        chain = [as_proxy(p) for p in proxy]
        if any(hop.proxy_protocol is not None for hop in chain[1:]):
            # a later hop's connection is the previous proxy's: only it could name the client
            raise ValueError("proxy_protocol is for the first proxy of a chain only")
        return chain
    return [as_proxy(proxy)]
