"""Which address a request comes from: one rule for every limit kvmweb keeps.

``X-Forwarded-For`` is anyone's to write. It is believed only when the
connection comes from a proxy listed in ``KVMWEB_TRUSTED_PROXIES`` (CIDRs; none
by default), and then only as far as the list of trusted proxies goes: read
from the right (each proxy appends the address it received the request from),
the first address that is not a trusted proxy is the client. Without a trusted
proxy the client is the connection's own address, whatever the header says:
rotating it does not escape a limit, and writing someone's address into it does
not lock them out. The API's throttles (core.throttling, core.auth) and the
login limits (core.logins) all ask here.
"""

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(address in network for network in settings.KVMWEB_TRUSTED_PROXIES)


def client_address(request: HttpRequest) -> str:
    remote = request.META.get("REMOTE_ADDR", "") or ""
    peer = _address(remote)
    if peer is None or not settings.KVMWEB_TRUSTED_PROXIES or not _trusted(peer):
        return remote
    client = peer
    for hop in reversed(request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")):
        address = _address(hop)
        if address is None:
            break  # something a trusted proxy would not write: stop at the last good hop
        client = address
        if not _trusted(address):
            break
    return str(client)
