"""The part of a Connection that finds, creates, deletes and streams volumes."""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from xml.sax.saxutils import quoteattr

import libvirt

from .base import Ops
from .errors import VolumeStreamError, translated, translating

# A piece of a volume: ("data", bytes) or ("hole", length in bytes).
Piece = tuple[str, bytes] | tuple[str, int]

# What virStreamRecvFlags returns instead of bytes (libvirt-python's stream codes).
STREAM_WOULD_BLOCK = -2  # non-blocking stream with nothing to read yet
STREAM_HOLE_NEXT = -3  # VIR_STREAM_RECV_STOP_AT_HOLE: a hole comes next, read it with recvHole

CHUNK = 4 * 1024 * 1024


def _xml_escape(value: object) -> str:
    return quoteattr(str(value))[1:-1]


class StorageOps(Ops):
    @translated(absent=(libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_NO_STORAGE_POOL), default=None)
    def volume_by_path(self, path: str, refresh: bool = True) -> tuple[str, int, int, str] | None:
        """(pool name, capacity, allocation, format) of the volume at path, or None."""
        if refresh:
            for pool in self._conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
                with contextlib.suppress(libvirt.libvirtError):
                    pool.refresh(0)
        vol = self._conn.storageVolLookupByPath(path)
        _t, capacity, allocation = vol.info()
        fmt = ET.fromstring(vol.XMLDesc()).find("target/format")
        return (
            vol.storagePoolLookupByVolume().name(),
            capacity,
            allocation,
            fmt.get("type", "raw") if fmt is not None else "raw",
        )

    @translated
    def create_volume(self, pool_name: str, name: str, capacity: int, fmt: str) -> str:
        """Create an empty volume in a pool; returns its path."""
        pool = self._conn.storagePoolLookupByName(pool_name)
        xml = (
            f"<volume><name>{_xml_escape(name)}</name><capacity unit='bytes'>{int(capacity)}</capacity>"
            f"<allocation unit='bytes'>0</allocation>"
            f"<target><format type='{_xml_escape(fmt or 'raw')}'/></target></volume>"
        )
        return str(pool.createXML(xml, 0).path())

    @translated(absent=(libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_NO_STORAGE_POOL), default=None)
    def volume_in_pool(self, pool_name: str, name: str) -> str | None:
        """The path of the volume ``name`` in the pool ``pool_name`` as it is now, or None."""
        pool = self._conn.storagePoolLookupByName(pool_name)
        with contextlib.suppress(libvirt.libvirtError):
            pool.refresh(0)
        return str(pool.storageVolLookupByName(name).path())

    @translated(absent=(libvirt.VIR_ERR_NO_STORAGE_VOL,), default=False)
    def delete_volume(self, path: str) -> bool:
        """Delete the volume at path; False if there was none."""
        self._conn.storageVolLookupByPath(path).delete(0)
        return True

    @contextlib.contextmanager
    def _volume_stream(self, path: str) -> Iterator[tuple[libvirt.virStorageVol, libvirt.virStream]]:
        """The volume at path and a new stream for it; the stream is finished
        after the block, or aborted if the block fails."""
        with translating(self.uri):
            vol = self._conn.storageVolLookupByPath(path)
            stream = self._conn.newStream(0)
        try:
            with translating(self.uri):
                yield vol, stream
                stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise

    def read_volume(self, path: str, chunk: int = CHUNK) -> Iterator[Piece]:
        """Yield ('data', bytes) and ('hole', length) pieces of a volume, sparsely.

        Holes are not sent over the network, so an image that is mostly empty
        costs only its data to copy (a plain scp of the image sends every byte)."""
        with self._volume_stream(path) as (vol, stream):
            vol.download(stream, 0, 0, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
            while True:
                got = stream.recvFlags(chunk, libvirt.VIR_STREAM_RECV_STOP_AT_HOLE)
                if got == STREAM_HOLE_NEXT:
                    length = stream.recvHole(0)
                    if length:
                        yield ("hole", length)
                    continue
                if got == STREAM_WOULD_BLOCK:
                    continue
                if isinstance(got, int):
                    raise VolumeStreamError(f"Reading {path} failed ({got}).")
                if not got:
                    break
                yield ("data", got)

    def write_volume(self, path: str, pieces: Iterable[Piece]) -> None:
        """Write ('data', bytes) / ('hole', length) pieces into a volume, sparsely."""
        with self._volume_stream(path) as (vol, stream):
            vol.upload(stream, 0, 0, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
            for _kind, value in pieces:
                if isinstance(value, int):
                    stream.sendHole(value, 0)
                    continue
                view = memoryview(value)
                while view:
                    sent = stream.send(view.tobytes())
                    if sent < 0:
                        raise VolumeStreamError(f"Writing {path} failed ({sent}).")
                    view = view[sent:]
