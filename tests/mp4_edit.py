"""Tiny MP4 box editor for tests: variable frame timing, index at the front, truncation.

OpenCV's ``VideoWriter`` only writes constant-frame-rate files with the index
(``moov``) after the media data. Tests need the other shapes a user's phone or
a cut-off download produces, without depending on the ffmpeg program, so this
module rewrites the ISO base media boxes (ISO/IEC 14496-12) directly: the
sample durations in ``stts``, and ``moov`` before ``mdat`` with its chunk
offsets (``stco``/``co64``) moved along.
"""

from __future__ import annotations

import struct
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf"}


def parse(data: bytes) -> list:
    """Boxes as [type, payload bytes | list of child boxes]; 64-bit sizes are not needed here."""
    out, off = [], 0
    while off + 8 <= len(data):
        size, typ = struct.unpack(">I4s", data[off : off + 8])
        size = size or len(data) - off  # 0: box runs to the end of the file
        body = data[off + 8 : off + size]
        out.append([typ, parse(body) if typ in _CONTAINERS else body])
        off += size
    return out


def build(boxes: list) -> bytes:
    out = b""
    for typ, body in boxes:
        raw = build(body) if isinstance(body, list) else body
        out += struct.pack(">I4s", 8 + len(raw), typ) + raw
    return out


def find(boxes: list, path: str):
    """The first box at a slash-separated path such as 'moov/trak/mdia/mdhd'."""
    head, _, rest = path.partition("/")
    for box in boxes:
        if box[0] == head.encode():
            return find(box[1], rest) if rest else box
    raise KeyError(path)


def write_test_video(path: Path, n: int = 40, fps: float = 30.0, size=(64, 48)) -> Path:
    """n frames of changing gray levels (frame i has level 5*i) with cv2's mp4v writer."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert w.isOpened(), f"OpenCV cannot write {path.suffix} here"
    for i in range(n):
        w.write(np.full((size[1], size[0], 3), 5 * i % 256, np.uint8))
    w.release()
    return path


def set_sample_times(path: Path, times_s: list[float]) -> None:
    """Give the video track's samples these presentation times (seconds, increasing)."""
    boxes = parse(path.read_bytes())
    mdhd = find(boxes, "moov/trak/mdia/mdhd")
    version = mdhd[1][0]
    timescale = struct.unpack(">I", mdhd[1][12:16] if version == 0 else mdhd[1][20:24])[0]
    ticks = [round(t * timescale) for t in times_s]
    deltas = [b - a for a, b in pairwise(ticks)] + [ticks[-1] - ticks[-2]]
    runs: list[list[int]] = []
    for d in deltas:
        if runs and runs[-1][1] == d:
            runs[-1][0] += 1
        else:
            runs.append([1, d])
    stts = find(boxes, "moov/trak/mdia/minf/stbl/stts")
    stts[1] = b"\0\0\0\0" + struct.pack(">I", len(runs)) + b"".join(
        struct.pack(">II", c, d) for c, d in runs
    )
    # The edit list still spans the old duration and would hide the later frames.
    trak = find(boxes, "moov/trak")
    trak[1] = [b for b in trak[1] if b[0] != b"edts"]
    duration = ticks[-1] + deltas[-1]
    body = bytearray(mdhd[1])
    if version == 0:
        body[16:20] = struct.pack(">I", duration)
    mdhd[1] = bytes(body)
    path.write_bytes(build(boxes))


def move_index_to_front(path: Path) -> None:
    """Put 'moov' before 'mdat' ("fast start"), shifting the chunk offsets it holds."""
    boxes = parse(path.read_bytes())
    moov = next(b for b in boxes if b[0] == b"moov")
    rest = [b for b in boxes if b[0] != b"moov"]
    shift = len(build([moov]))
    stco = find(boxes, "moov/trak/mdia/minf/stbl/stco")
    n = struct.unpack(">I", stco[1][4:8])[0]
    offs = struct.unpack(f">{n}I", stco[1][8 : 8 + 4 * n])
    stco[1] = stco[1][:8] + struct.pack(f">{n}I", *(o + shift for o in offs))
    ftyp = [b for b in rest if b[0] == b"ftyp"]
    others = [b for b in rest if b[0] != b"ftyp"]
    path.write_bytes(build(ftyp + [moov] + others))


def truncate_media(path: Path, fraction: float = 0.5) -> None:
    """Cut the file part-way through its media data (index at the front stays whole)."""
    data = path.read_bytes()
    start = data.index(b"mdat") - 4
    size = struct.unpack(">I", data[start : start + 4])[0]
    path.write_bytes(data[: start + 8 + int((size - 8) * fraction)])
