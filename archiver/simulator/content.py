"""The bytes behind the artifact links: deterministic recordings and downloads zips.

Pure functions of the seed and the task. A big recording (``recording_bytes``) is produced as
a stream of chunks, never whole, so even 2 GiB is served in constant memory.
"""

from __future__ import annotations

import hashlib
import io
import random
import struct
import zipfile
from collections.abc import Iterator
from functools import cache
from importlib import resources

from archiver.simulator.scenario import Task, words

__all__ = [
    "PLAYABLE_CONTENT_TYPE",
    "big_recording",
    "downloads_zip",
    "hostile_zip",
    "many_members_zip",
    "playable_recording",
    "recording_bytes",
]

_FTYP = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"


def recording_bytes(seed: int, t: Task) -> bytes:
    """A small (2-32 KB) video-like file."""
    digest = hashlib.sha256(f"{seed}:{t.id}:rec".encode()).digest()
    size = 2048 + int.from_bytes(digest[:2], "big") % 30_000
    chunks = [_FTYP]
    block = digest
    while sum(map(len, chunks)) < size:
        block = hashlib.sha256(block).digest()
        chunks.append(block)
    return b"".join(chunks)[:size]


#: The packaged recording's type (``playable_recordings``).
PLAYABLE_CONTENT_TYPE = "video/webm"


@cache
def playable_recording() -> bytes:
    """A real, playable recording: 4 s of VP8 in WebM (17 KB, with its duration and seek
    index), recorded by Chromium; shipped as package data, found through importlib so it
    works from an installed wheel."""
    return (resources.files("archiver.simulator") / "data" / "recording.webm").read_bytes()


def big_recording(seed: int, t: Task, size: int, chunk_bytes: int) -> Iterator[bytes]:
    """``size`` video-like bytes: an ftyp header, then a seeded 1 MiB block, cycled."""
    rng = random.Random(f"{seed}:{t.id}:bigrec")
    block = rng.randbytes(1024 * 1024)
    twice = block + block
    step = min(chunk_bytes, len(block))
    first = _FTYP[:size]
    if first:
        yield first
    sent, offset = len(first), 0
    while sent < size:
        n = min(step, size - sent)
        yield twice[offset : offset + n]
        offset = (offset + n) % len(block)
        sent += n


def downloads_zip(seed: int, t: Task) -> bytes:
    """A small valid zip of 1-3 text files."""
    rng = random.Random(f"{seed}:{t.id}:zip")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for k in range(rng.randint(1, 3)):
            info = zipfile.ZipInfo(f"download_{k}_{words(rng, 1)}.txt", (2025, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, (words(rng, 20) + "\n").encode() * rng.randint(1, 20))
    return buf.getvalue()


def hostile_zip(t: Task) -> bytes:
    """A zip whose member names try to escape: ../, absolute, drive and UNC paths."""
    names = (
        "../../etc/passwd",
        "/etc/shadow",
        "..\\..\\windows\\system32\\evil.dll",
        "C:/Users/Public/evil.txt",
        "a/../../../escape.txt",
        "./ok/../../dot.txt",
        "normal/ok.txt",
        "ünïcödé/名前.txt",
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, name in enumerate(names):
            info = zipfile.ZipInfo(name, (2026, 1, 2, 3, 4, 6))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, f"{t.id} member {k}\n".encode() * 10)
    return buf.getvalue()


def many_members_zip(members: int) -> bytes:
    """A zip64 archive of ``members`` empty stored files (``f0000000``, ...), as a hostile
    host could send: 1M members are 92 MB. Written directly: zipfile would keep a ZipInfo
    per member while writing."""
    local, central = [], []
    offset = 0
    for index in range(members):
        name = f"f{index:07d}".encode()
        header = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 33, 0, 0, 0, len(name), 0)
        local.append(header + name)
        entry = (b"PK\x01\x02", 20, 20, 0, 0, 0, 33, 0, 0, 0, len(name), 0, 0, 0, 0, 0, offset)
        central.append(struct.pack("<4s6H3L5H2L", *entry) + name)
        offset += len(header) + len(name)
    directory = b"".join(central)
    size = len(directory)
    end64 = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, members, members, size, offset
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, offset + size, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return b"".join(local) + directory + end64 + locator + end
