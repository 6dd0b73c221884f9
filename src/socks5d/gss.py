"""GSS-API for SOCKS5 (RFC 1961), both roles: the security context, the protection-level
sub-negotiation and per-message protection, over python-gssapi (the `gssapi`
extra). No I/O here: the server's session and the client's handshake move the
tokens; `proto.gssapi` frames them.

    negotiation = Acceptor(credentials)             # server: one per connection
    reply_token = negotiation.step(token)           # MTYP 1 until negotiation.complete
    level, unwrapped = negotiation.read_level(token, accept_unwrapped=False)   # MTYP 2
    protection = Protection(negotiation.context, level)
    wire = protection.seal(data)                    # MTYP 3 messages
    data = protection.open(wire)                    # whatever complete tokens arrived
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from socks5d.constants import ProtectionLevel
from socks5d.errors import AuthFailed, ConfigError, LocalProtocolError, ProtocolError
from socks5d.extras import install_hint
from socks5d.proto.gssapi import (
    MAX_TOKEN_LENGTH,
    EncapsulatedStream,
    decode_encapsulated_datagram,
    encode_encapsulated,
)

if TYPE_CHECKING:
    import gssapi

#: `levels` / `--gssapi-levels` spellings.
LEVEL_NAMES: dict[str, ProtectionLevel] = {
    "clear": ProtectionLevel.CLEAR,
    "integrity": ProtectionLevel.INTEGRITY,
    "confidentiality": ProtectionLevel.CONFIDENTIALITY,
}
#: The service name Dante's client asks for by default (`rcmd@<proxy host>`).
DEFAULT_SERVICE = "rcmd"
INSTALL_HINT = f"GSS-API needs python-gssapi: {install_hint('gssapi')}"


def gssapi_module() -> Any:
    """python-gssapi, imported on first use.

    Raises:
        ConfigError: it is not installed.
    """
    try:
        import gssapi
    except ImportError as exc:
        raise ConfigError(INSTALL_HINT) from exc
    return gssapi


def describe(exc: Exception) -> str:
    """A GSS-API error in one line: major and minor status in words."""
    gen_message = getattr(exc, "gen_message", None)
    text = gen_message() if gen_message is not None else str(exc)
    return " ".join(str(text).split())


def level_name(level: int) -> str:
    try:
        return ProtectionLevel(level).name.lower()
    except ValueError:
        return f"{level:#04x}"


# --------------------------------------------------------------------------- the server's side


def acceptor_credentials(service: str, keytab: Path | None) -> gssapi.Credentials:
    """The server's credentials: the keys of `service`/<any host> in `keytab` (default: the
    `KRB5_KTNAME` keytab, else the system's).

    Raises:
        ConfigError: no such keytab, or no key for the service in it.
    """
    module = gssapi_module()
    # "service@" with no host: accept for any host name the client used (the client asks for
    # the name it knows the proxy by: localhost, an address, a DNS name).
    name = module.Name(f"{service}@", module.NameType.hostbased_service)
    store = None
    if keytab is not None:
        if not keytab.is_file():
            raise ConfigError(f"gssapi.keytab: {keytab}: no such file")
        store = {"keytab": os.fsencode(keytab)}
    try:
        # Kerberos only: without `mechs` the credentials also take SPNEGO, whose hint token
        # would answer garbage instead of the abort message.
        credentials: gssapi.Credentials = module.Credentials(
            name=name, usage="accept", store=store, mechs=[module.MechType.kerberos]
        )
        return credentials
    except module.exceptions.GSSError as exc:
        where = keytab or os.environ.get("KRB5_KTNAME", "the default keytab")
        raise ConfigError(
            f"gssapi: no key for service {service!r} in {where}: {describe(exc)}"
        ) from exc


class Acceptor:
    """One client's security context establishment and protection-level sub-negotiation."""

    __slots__ = ("context", "module")

    def __init__(self, credentials: gssapi.Credentials) -> None:
        self.module = gssapi_module()
        self.context = self.module.SecurityContext(creds=credentials, usage="accept")

    def step(self, token: bytes) -> bytes:
        """Process a client token (MTYP 1); return the token to send back (may be empty).

        Raises:
            AuthFailed: the context cannot be established (bad ticket, wrong key, garbage).
        """
        try:
            answer = self.context.step(token) or b""
            # python-gssapi hands back the error token of a failed step (a KRB-ERROR) and
            # raises only on the next use of the context: use it here. The client gets the
            # abort message, not the error token.
            self.context.complete  # noqa: B018
        except self.module.exceptions.GSSError as exc:
            raise AuthFailed(f"GSS-API context not established: {describe(exc)}") from exc
        return bytes(answer)

    @property
    def complete(self) -> bool:
        return bool(self.context.complete)

    @property
    def principal(self) -> str:
        """The authenticated client, as the KDC names it (`alice@EXAMPLE.ORG`)."""
        return str(self.context.initiator_name)

    def read_level(self, token: bytes, *, accept_unwrapped: bool) -> tuple[ProtectionLevel, bool]:
        """The level the client requires (MTYP 2), and whether it came unwrapped.

        RFC 1961 §4.4: "The token is produced by encapsulating an octet containing the
        required protection level using gss_seal()/gss_wrap() with conf_req set to FALSE."
        The NEC reference implementation sends the octet itself (a token of length 1, which
        no wrap token can be); that is accepted only with `accept_unwrapped`.

        Raises:
            AuthFailed: not a valid level message.
        """
        return _read_level(self.module, self.context, token, accept_unwrapped)

    def level_token(self, level: ProtectionLevel, *, unwrapped: bool) -> bytes:
        """The server's answer (RFC 1961 §4.3: "The server then returns the security context
        protection level which it agrees to"), wrapped like the request was.
        """
        return _level_token(self.context, level, unwrapped)


# --------------------------------------------------------------------------- the client's side


def initiate(
    service: str,
    host: str,
    credentials: gssapi.Credentials | None = None,
    *,
    in_sequence: bool = True,
) -> gssapi.SecurityContext:
    """A context for `service@host` with the client's default credentials (the ccache).
    `in_sequence` asks for sequence checking of tokens (a TCP stream); replays are always
    detected.
    """
    module = gssapi_module()
    flags = (
        module.RequirementFlag.mutual_authentication
        | module.RequirementFlag.integrity
        | module.RequirementFlag.confidentiality
        | module.RequirementFlag.replay_detection
    )
    if in_sequence:
        flags |= module.RequirementFlag.out_of_sequence_detection
    name = module.Name(f"{service}@{host}", module.NameType.hostbased_service)
    context: gssapi.SecurityContext = module.SecurityContext(
        name=name, usage="initiate", flags=flags, creds=credentials
    )
    return context


def initiator_step(context: gssapi.SecurityContext, token: bytes | None) -> bytes:
    """The client's next token (empty when there is none to send).

    Raises:
        AuthFailed: no ticket, expired ticket, unknown service, a bad server token.
    """
    module = gssapi_module()
    try:
        answer = context.step(token) or b""
        context.complete  # noqa: B018  (raises the error of a step that returned a token)
    except module.exceptions.GSSError as exc:
        raise AuthFailed(f"GSS-API context not established: {describe(exc)}") from exc
    return bytes(answer)


def client_level_token(
    context: gssapi.SecurityContext, level: ProtectionLevel, *, unwrapped: bool
) -> bytes:
    """The level the client requires, as the MTYP 2 token."""
    return _level_token(context, level, unwrapped)


def client_read_level(
    context: gssapi.SecurityContext, token: bytes, *, unwrapped: bool
) -> ProtectionLevel:
    """The level the server agreed to."""
    level, _ = _read_level(gssapi_module(), context, token, unwrapped)
    return level


# --------------------------------------------------------------------------- shared


def _level_token(context: gssapi.SecurityContext, level: ProtectionLevel, unwrapped: bool) -> bytes:
    octet = bytes([level])
    if unwrapped:
        return octet
    return bytes(context.wrap(octet, False).message)


def _read_level(
    module: Any, context: gssapi.SecurityContext, token: bytes, accept_unwrapped: bool
) -> tuple[ProtectionLevel, bool]:
    if len(token) == 1:
        if not accept_unwrapped:
            raise AuthFailed(
                "the protection level came unwrapped (the NEC variant), which is not enabled"
            )
        octet, unwrapped = token, True
    else:
        try:
            octet = context.unwrap(token).message
        except module.exceptions.GSSError as exc:
            raise AuthFailed(f"protection level token does not unwrap: {describe(exc)}") from exc
        unwrapped = False
    if len(octet) != 1:
        raise AuthFailed(f"protection level message of {len(octet)} octets, not 1")
    try:
        return ProtectionLevel(octet[0]), unwrapped
    except ValueError:
        raise AuthFailed(f"unknown protection level {octet[0]:#04x}") from None


class Protection:
    """Per-message protection of one connection at an agreed level (RFC 1961 §5).

    §5: "If protection level 1 is agreed then conf_req_flag MUST always be FALSE; if
    protection level 2 is agreed then conf_req_flag MUST always be TRUE". A token the peer
    protected otherwise is refused, as is any token that does not verify.
    """

    __slots__ = ("_error", "_stream", "context", "encrypt", "level", "max_plaintext", "module")

    def __init__(self, context: gssapi.SecurityContext, level: ProtectionLevel) -> None:
        if level not in (ProtectionLevel.INTEGRITY, ProtectionLevel.CONFIDENTIALITY):
            raise LocalProtocolError(f"no per-message protection at level {level_name(level)}")
        self.module = gssapi_module()
        self.context = context
        self.level = level
        self.encrypt = level == ProtectionLevel.CONFIDENTIALITY
        #: the most plaintext one token carries ("up to 2^16 - 1 octets" of token)
        self.max_plaintext = int(context.get_wrap_size_limit(MAX_TOKEN_LENGTH, self.encrypt))
        self._stream = EncapsulatedStream()
        #: the error after tokens that were delivered (`open`)
        self._error: ProtocolError | None = None

    def seal(self, data: bytes) -> bytes:
        """`data` as framed MTYP 3 messages, as many as its length needs."""
        wrap = self.context.wrap
        size = self.max_plaintext
        if len(data) <= size:
            return encode_encapsulated(wrap(data, self.encrypt).message)
        view = memoryview(data)
        return b"".join(
            encode_encapsulated(wrap(bytes(view[start : start + size]), self.encrypt).message)
            for start in range(0, len(data), size)
        )

    def open(self, data: bytes) -> bytes:
        """Take bytes as they came off the wire; return the plaintext of every token now
        complete (possibly none). `b""` is the end of the stream.

        Raises:
            ProtocolError: bad framing, a token that does not verify, the wrong protection,
                or the stream ended inside a token. When good tokens came before the bad one
                in `data`, their plaintext is returned first and the error is raised by the
                next `open` or `check`: what was verified is delivered.
        """
        self.check()
        stream = self._stream
        stream.feed(data)
        parts = []
        try:
            while (token := stream.next_token()) is not None:
                parts.append(self._unwrap(token))
        except ProtocolError as exc:
            if not parts:
                raise
            self._error = exc
        return b"".join(parts)

    def check(self) -> None:
        """Raise the error found after the tokens `open` last delivered, if any: call it
        before waiting for more bytes.
        """
        if self._error is not None:
            raise self._error

    @property
    def pending(self) -> int:
        """Octets of an incomplete token held."""
        return self._stream.pending

    def seal_datagram(self, data: bytes) -> bytes:
        """One UDP datagram's payload as one framed token.

        Raises:
            LocalProtocolError: too long for one token.
        """
        token = self.context.wrap(data, self.encrypt).message
        if len(token) > MAX_TOKEN_LENGTH:
            raise LocalProtocolError(f"datagram of {len(data)} octets is too long to protect")
        return encode_encapsulated(token)

    def open_datagram(self, data: bytes) -> bytes:
        """The plaintext of a UDP datagram that is one framed token.

        Raises:
            ProtocolError: not one framed token, or it does not verify.
        """
        return self._unwrap(decode_encapsulated_datagram(data))

    def _unwrap(self, token: bytes) -> bytes:
        try:
            result = self.context.unwrap(token)
        except self.module.exceptions.GSSError as exc:
            raise ProtocolError(f"GSS-API token does not verify: {describe(exc)}") from exc
        if bool(result.encrypted) != self.encrypt:
            raise ProtocolError(
                f"a token {'with' if result.encrypted else 'without'} confidentiality at "
                f"protection level {level_name(self.level)}"
            )
        return bytes(result.message)
