"""Who is voting: pseudonymous ids for a session, a client address and a browser (a signed cookie).

A voter is known by up to three things, each kept only as an HMAC with the arena's secret salt:

- ``judge``: the page session (gradio's ``session_hash``); a battle belongs to the session it was served to.
- ``client``: the network the request came from — the IPv4 address, or the /64 prefix of an IPv6 address (one
  home or phone gets a whole /64, so single IPv6 addresses are free to rotate). Empty when unknown.
- ``browser``: the arena cookie, ``<token>.<signature>``, issued by the server and signed with a key derived from
  the salt; a forged or altered cookie counts as none. Empty when absent.

Fresh sessions are free and cookies can be dropped, so limits count per client address as well; public arenas do
the same (FastChat keys its judge id on the IP address).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass

COOKIE_NAME = "mova_arena"
IPV6_PREFIX = 64  # addresses of one IPv6 /64 are one client
_ID_CHARS = 20  # hex characters kept of each HMAC


@dataclass(frozen=True)
class Voter:
    """A request as the UI sees it: the page session, the client address, the arena cookie (raw values)."""

    session: str
    address: str | None = None
    cookie: str | None = None


@dataclass(frozen=True)
class VoterIds:
    """The pseudonymous ids stored with battles and votes ('' when the fact is unknown)."""

    judge: str
    client: str
    browser: str


def network_key(address: str) -> str:
    """The part of an address that names one client: an IPv4 address, or the /64 network of an IPv6 address.

    A value that is not an IP address (a test client's name, a Unix socket) is kept as it is.
    """
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address.strip()
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False))
    return str(ip)


class Identities:
    """Turns raw voter facts into pseudonymous ids, and issues and checks arena cookies.

    Args:
        salt: the arena's secret (``meta.judge_salt``, kept in the database under the data directory).
    """

    def __init__(self, salt: bytes):
        if len(salt) < 16:
            raise ValueError(f"salt has {len(salt)} bytes; use at least 16")
        self._salt = salt
        self._cookie_key = hmac.new(salt, b"arena cookie signing key", hashlib.sha256).digest()

    def _id(self, kind: str, value: str) -> str:
        message = value.encode() if kind == "session" else f"{kind}:{value}".encode()
        return hmac.new(self._salt, message, hashlib.sha256).hexdigest()[:_ID_CHARS]

    def judge(self, session: str) -> str:
        """The session's judge id (HMAC-SHA256 of the session id; the same value schema v1 stored)."""
        if not session:
            raise ValueError("a session id is required to take part in the arena")
        return self._id("session", session)

    def ids(self, voter: Voter) -> VoterIds:
        client = self._id("client", network_key(voter.address)) if voter.address else ""
        token = self.cookie_token(voter.cookie)
        browser = self._id("browser", token) if token else ""
        return VoterIds(judge=self.judge(voter.session), client=client, browser=browser)

    def _signature(self, token: str) -> str:
        return hmac.new(self._cookie_key, token.encode(), hashlib.sha256).hexdigest()[:32]

    def issue_cookie(self) -> str:
        """A new cookie value: a random token and its signature."""
        token = secrets.token_hex(16)
        return f"{token}.{self._signature(token)}"

    def cookie_token(self, value: str | None) -> str | None:
        """The token of a cookie this arena issued, or ``None`` (absent, malformed or forged)."""
        if not value or value.count(".") != 1:
            return None
        token, signature = value.split(".")
        if len(token) != 32 or not hmac.compare_digest(signature, self._signature(token)):
            return None
        return token
