"""Where outbound webhooks may go (SSRF guard): only globally routable addresses, resolved once
and pinned for the connection so a name cannot answer differently between the check and the POST
(DNS rebinding). `LOUDOU_WEBHOOK_ALLOW_PRIVATE=true` (dev and tests) lifts the guard; production
also requires https. Written by hand: no maintained library pins httpx to a checked address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from app.config import Settings
from app.errors import FieldError, ValidationFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(Exception):
    """The URL may not be called; the message is short, fixed and safe to show to an admin."""


@dataclass(frozen=True)
class TargetPolicy:
    """What the deployment allows: private targets (dev/tests) and plain http (not in production)."""

    allow_private: bool
    require_https: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> TargetPolicy:
        """The policy of this process's settings."""
        return cls(allow_private=settings.webhook_allow_private, require_https=settings.env == "production")


@dataclass(frozen=True)
class PinnedTarget:
    """The URL to connect to (the host replaced by the checked address) and the headers and TLS
    server name that keep the original host name."""

    url: str
    host_header: str | None
    sni_hostname: str | None


async def resolve(host: str, port: int) -> list[str]:
    """Every address the name resolves to now (tests replace this to play a rebinding resolver)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _is_allowed(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return _is_allowed(mapped)
        if address.teredo is not None:
            return False
    return address.is_global and not address.is_multicast


async def pin(url: str, policy: TargetPolicy) -> PinnedTarget:
    """Check the URL and resolve its host once; raises TargetRefused for anything not allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("only http and https URLs")
    if policy.require_https and parts.scheme != "https":
        raise TargetRefused("https is required")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("credentials in the URL are not allowed")
    host = parts.hostname
    if not host:
        raise TargetRefused("no host")
    if policy.allow_private:
        return PinnedTarget(url=url, host_header=None, sni_hostname=None)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            answers = await asyncio.wait_for(resolve(host, port), timeout=5.0)
        except (OSError, TimeoutError, UnicodeError):
            raise TargetRefused("the host name does not resolve") from None
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in answers]
    if not addresses:
        raise TargetRefused("the host name does not resolve")
    if not all(_is_allowed(a) for a in addresses):
        raise TargetRefused("the target address is not public")
    if literal is not None:
        return PinnedTarget(url=url, host_header=None, sni_hostname=None)
    chosen = addresses[0]
    netloc = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    if parts.port is not None:
        netloc += f":{parts.port}"
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    return PinnedTarget(
        url=urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")),
        host_header=host_header,
        sni_hostname=host if parts.scheme == "https" else None,
    )


async def check(url: str, policy: TargetPolicy) -> None:
    """Refuse a subscription URL that may not be called, as a 422 on `url`."""
    try:
        await pin(url, policy)
    except TargetRefused as exc:
        raise ValidationFailed(
            f"The webhook URL is not allowed: {exc}.",
            errors=[FieldError(field="url", code="url_not_allowed", message=str(exc))],
        ) from None
