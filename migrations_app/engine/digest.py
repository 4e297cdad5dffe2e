"""A digest of a volume's content, to prove a copy reads back identical."""

from __future__ import annotations

import hashlib

BLOCK = 64 * 1024
ZERO_BLOCK = bytes(BLOCK)


class BlockDigest:
    """A digest of a volume's content that does not depend on how it was cut
    into pieces or which zero ranges were holes: all-zero 64 KiB blocks are
    skipped, the others hashed with their offset."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.offset = 0
        self.buffer = bytearray()

    def add(self, kind: str, value: bytes | int) -> None:
        if isinstance(value, int):  # kind == "hole": value is its length
            self._flush_zeros(value)
            return
        self.buffer += value
        usable = len(self.buffer) - len(self.buffer) % BLOCK
        for start in range(0, usable, BLOCK):
            self._block(bytes(self.buffer[start : start + BLOCK]))
        del self.buffer[:usable]

    def _flush_zeros(self, length: int) -> None:
        # A hole continues the partial block with zeros.
        if self.buffer:
            fill = min(BLOCK - len(self.buffer), length)
            self.buffer += bytes(fill)
            length -= fill
            if len(self.buffer) == BLOCK:
                self._block(bytes(self.buffer))
                self.buffer.clear()
        whole = length - length % BLOCK
        self.offset += whole
        if length % BLOCK:
            self.buffer += bytes(length % BLOCK)

    def _block(self, block: bytes) -> None:
        if block != ZERO_BLOCK[: len(block)]:
            self.hash.update(self.offset.to_bytes(8, "little"))
            self.hash.update(block)
        self.offset += len(block)

    def hexdigest(self) -> str:
        if self.buffer:
            self._block(bytes(self.buffer))
            self.buffer.clear()
        self.hash.update(b"end" + self.offset.to_bytes(8, "little"))
        return self.hash.hexdigest()
