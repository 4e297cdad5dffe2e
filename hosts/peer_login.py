"""Whether a source host proved it can log in to a target's libvirt itself.

A peer-to-peer live migration needs the source's libvirtd to open the
target's URI on its own (with its root's SSH key or its TLS client
certificate). The pre-flight check ``peer_login`` proves it with a probe (a
connection from the one to the other: an SSH handshake over qemu+ssh, about
0.6 s) and keeps the proof here, in the cache (Redis), by the pair of URIs,
for PEER_PROOF_SECONDS: within it the probe is not made again. What could
change unnoticed meanwhile: the source's key or certificate removed; the
migration then fails at its start with the login's own message, the VM where
it was, and the engine forgets the proof (``forget``).

Without a cache (Redis away) nothing is proved, so the probe is made each time.
"""

from __future__ import annotations

import contextlib
import hashlib
import time

from django.core.cache import cache

PEER_PROOF_SECONDS = 300


def _key(source_uri: str, target_uri: str) -> str:
    return "kvmweb:peer-login:" + hashlib.sha256(f"{source_uri}\n{target_uri}".encode()).hexdigest()[:40]


def proved_ago(source_uri: str, target_uri: str) -> float | None:
    """Seconds since the source proved it can log in to the target, if within
    PEER_PROOF_SECONDS; None when it must be asked again."""
    try:
        proved_at = cache.get(_key(source_uri, target_uri))
    except Exception:  # Redis away: no proof, so the probe
        return None
    if not isinstance(proved_at, float):
        return None
    ago = time.time() - proved_at
    return ago if 0 <= ago < PEER_PROOF_SECONDS else None


def remember(source_uri: str, target_uri: str) -> None:
    """The source just logged in to the target."""
    with contextlib.suppress(Exception):  # no cache: the probe is made each time
        cache.set(_key(source_uri, target_uri), time.time(), PEER_PROOF_SECONDS)


def forget(source_uri: str, target_uri: str) -> None:
    """The source could not log in to the target after all: probe again next time."""
    with contextlib.suppress(Exception):
        cache.delete(_key(source_uri, target_uri))
