"""Turning command-line inputs (files, folders, glob patterns) into a stream of media files.

:func:`iter_inputs` walks what the user named and yields one :class:`InputFile`
per entry it meets, in a stable order, without opening images or videos:

* ``image`` / ``video``: a readable regular file to analyse, chosen by extension
  (any case) or, for files without a known extension, by the first bytes;
* ``skipped``: something the user will want to know about and fix (a broken or
  looping symbolic link, a FIFO or device, a file without read permission, a
  folder that cannot be listed, a named file that is not an image or video, a
  pattern that matches nothing); batch commands count these and exit 1;
* ``ignored``: harmless entries met while scanning a folder or pattern (a
  ``README.txt`` or ``.json`` sidecar, a file or folder reached a second time
  through a link); counted in the summary but not an error.

The walk follows symbolic links to folders but remembers every folder and file
it has read (by device and inode), so it always ends and yields each file once,
whatever links and loops the tree holds. Hidden entries (names starting with a
dot, such as ``.DS_Store``) are passed over silently.

Each problem is a typed :class:`InputError` whose ``reason`` is the category
a summary groups it under.
"""

from __future__ import annotations

import errno
import glob
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ferkit.data.images import IMAGE_EXTENSIONS
from ferkit.errors import DataError

#: Container extensions OpenCV's FFmpeg backend reads (lower case).
VIDEO_EXTENSIONS = {
    ".mp4", ".m4v", ".mov", ".3gp", ".3g2", ".avi", ".mkv", ".webm", ".mpg", ".mpeg",
    ".wmv", ".asf", ".flv", ".f4v", ".ogv", ".mts", ".m2ts", ".vob",
}

_GLOB_CHARS = set("*?[")


class InputError(DataError):
    """An input that cannot be analysed; ``reason`` is its summary category."""

    reason = "unreadable input"


class NoSuchInput(InputError):
    reason = "no such file or folder"


class NoMatch(InputError):
    reason = "no file matches this pattern"


class NoMedia(InputError):
    reason = "no image or video files in this folder"


class BrokenLink(InputError):
    reason = "broken symbolic link"


class LinkLoop(InputError):
    reason = "symbolic link loop"


class NotRegularFile(InputError):
    reason = "not a regular file (FIFO, socket or device)"


class PermissionDenied(InputError):
    reason = "permission denied"


class NotMedia(InputError):
    reason = "not an image or video file"


class AlreadySeen(InputError):
    reason = "already read (reached twice through links or patterns)"


@dataclass(frozen=True)
class InputFile:
    """One entry of the walk.

    Attributes:
        kind: "image", "video", "skipped" or "ignored".
        path: the file's path (as met, links not resolved).
        name: what to call it in output records and messages.
        problem: why it was skipped or ignored (None for images and videos).
    """

    kind: str
    path: Path
    name: str
    problem: InputError | None = None


def is_video_file(path: str | os.PathLike) -> bool:
    """Whether the extension (any case) is a video container's."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def sniff_media(head: bytes) -> tuple[str, str] | None:
    """(kind, format) from a file's first 32 bytes, or None when no media format matches.

    Kinds are "image" or "video"; formats are short names ("jpeg", "png", "mp4",
    "3gp", "mkv", ...). Only formats Pillow or OpenCV's FFmpeg backend read are named.
    """
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ("image", "webp")
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return ("video", "avi")
    for magic, fmt in _IMAGE_MAGIC:
        if head.startswith(magic):
            return ("image", fmt)
    if head[4:8] == b"ftyp":  # ISO base media (MP4, MOV, 3GP): the brand names the flavour
        brand = head[8:12]
        return ("video", "3gp" if brand[:3] in (b"3gp", b"3g2") else "mov" if brand == b"qt  " else "mp4")
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return ("video", "mov")  # QuickTime files from before 'ftyp'
    for magic, fmt in _VIDEO_MAGIC:
        if head.startswith(magic):
            return ("video", fmt)
    return None


_IMAGE_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"),
    (b"GIF89a", "gif"), (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"),
    (b"P5", "pgm"), (b"P6", "ppm"), (b"P2", "pgm"), (b"P3", "ppm"),
)
_VIDEO_MAGIC = (
    (b"\x1a\x45\xdf\xa3", "mkv"),  # EBML: Matroska and WebM
    (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "wmv"),  # ASF
    (b"FLV\x01", "flv"),
    (b"\x00\x00\x01\xba", "mpeg"),  # MPEG program stream
    (b"OggS", "ogv"),
)


def case_insensitive_pattern(pattern: str) -> str:
    """The glob pattern with its last component matching any letter case.

    Folder scans pick files by extension in any case, so ``*.jpg`` must find
    ``IMG_1.JPG`` too. Folder components keep their case: on a case-sensitive
    file system ``Photos/`` and ``photos/`` are different folders. Bracket
    expressions get both cases too (``[a-c]`` -> ``[a-cA-C]``).
    """
    head, tail = os.path.split(pattern)
    out, i = [], 0
    while i < len(tail):
        ch = tail[i]
        end = tail.find("]", i + 2) if ch == "[" else -1
        if end != -1:
            body = tail[i + 1 : end]
            neg = body[:1] in ("!", "^")
            body = body[1:] if neg else body
            out.append("[" + ("!" if neg else "") + body + _other_case(body) + "]")
            i = end + 1
            continue
        if ch == "[":
            out.append("[[]")  # an unclosed bracket is a literal '['; keep it one
        else:
            out.append(f"[{ch.lower()}{ch.upper()}]" if ch.lower() != ch.upper() else ch)
        i += 1
    return os.path.join(head, "".join(out)) if head else "".join(out)


def _other_case(body: str) -> str:
    """The letters and letter ranges of a bracket expression, in the other case."""
    extra, i = [], 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            a, b = body[i], body[i + 2]
            if a.isalpha() and b.isalpha() and a.swapcase() != a and b.swapcase() != b:
                extra.append(f"{a.swapcase()}-{b.swapcase()}")
            i += 3
            continue
        if body[i].swapcase() != body[i]:
            extra.append(body[i].swapcase())
        i += 1
    return "".join(extra)


def iter_inputs(
    items: Iterable[str | os.PathLike], aliases: dict[str, tuple[Path, str]] | None = None
) -> Iterator[InputFile]:
    """Walk files, folders (recursively) and glob patterns; yield one InputFile per entry.

    Args:
        items: what the user named: files, folders, glob patterns (``*``, ``?``,
            ``[...]``, ``**`` for any depth; the file-name part matches any case).
        aliases: names standing for a fixed file, e.g. ``{"demo": (path, "astronaut.png")}``.

    Nothing raises: every problem is yielded as a ``skipped`` or ``ignored`` entry.
    """
    walk = _Walk()
    for item in items:
        key = os.fspath(item)
        if aliases and key in aliases:
            path, name = aliases[key]
            yield InputFile("image", Path(path), name)
            continue
        path = Path(key).expanduser()
        if not key.strip():
            # Path("") is ".": an unset shell variable ("$DIR") walked the whole working folder
            yield InputFile("skipped", path, repr(key), NoSuchInput(f"{key!r}: an empty input name"))
        elif os.path.lexists(path):
            yield from walk.entry(path, key, explicit=True)
        elif _GLOB_CHARS & set(key):
            pattern = case_insensitive_pattern(os.path.expanduser(key))
            hits = sorted(glob.iglob(pattern, recursive=True))
            if not hits:
                yield InputFile("skipped", path, key, NoMatch(f"{key}: no file matches this pattern"))
            for h in hits:
                yield from walk.entry(Path(h), h, explicit=False)
        else:
            yield InputFile("skipped", path, key, NoSuchInput(f"{key}: no such file or folder"))


class _Walk:
    """The state of one walk: folders and files already read (device, inode)."""

    def __init__(self):
        self.dirs: set[tuple[int, int]] = set()
        self.files: dict[tuple[int, int], str] = {}
        self.skips: dict[tuple[int, int], str] = {}

    def skip(self, path: Path, name: str, problem: InputError, st: os.stat_result | None = None) -> InputFile:
        """A skipped entry, counted once however often it is reached: a pattern and a folder link
        (``sub/loop -> ..``) reached the same FIFO or broken link twice and the summary counted
        both (its own stat, or the link's own lstat when its target is gone)."""
        try:
            st = st or os.lstat(path)
        except OSError:
            return InputFile("skipped", path, name, problem)
        ident = (st.st_dev, st.st_ino)
        if ident in self.skips:
            return InputFile("ignored", path, name, AlreadySeen(f"{name}: same entry as {self.skips[ident]}"))
        self.skips[ident] = name
        return InputFile("skipped", path, name, problem)

    def entry(self, path: Path, name: str, explicit: bool) -> Iterator[InputFile]:
        st = _stat(path, name)
        if isinstance(st, InputError):
            yield self.skip(path, name, st)
        elif stat.S_ISDIR(st.st_mode):
            found = False  # an image, a video or a reported problem below it
            for f in self.folder(path, st):
                found = found or f.kind != "ignored"
                yield f
            if explicit and not found:
                # a folder named on purpose that held nothing to read ended "0 image(s)", exit 0
                yield InputFile("skipped", path, name, NoMedia(f"{name}: no image or video files in this folder"))
        else:
            yield self.file(path, name, st, explicit)

    def folder(self, root: Path, st: os.stat_result) -> Iterator[InputFile]:
        if (st.st_dev, st.st_ino) in self.dirs:
            yield InputFile("ignored", root, str(root), AlreadySeen(f"{root}: folder already read"))
            return
        self.dirs.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(root) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as e:
            yield InputFile("skipped", root, str(root), _os_problem(e, str(root), "folder"))
            return
        # Files of a folder first, then its sub-folders, as os.walk orders them.
        subdirs = []
        for e in entries:
            p = Path(e.path)
            st_e = _stat(p, str(p))
            if isinstance(st_e, InputError):
                yield self.skip(p, str(p), st_e)
            elif stat.S_ISDIR(st_e.st_mode):
                subdirs.append((p, st_e))
            else:
                yield self.file(p, str(p), st_e, explicit=False)
        for p, st_d in subdirs:
            yield from self.folder(p, st_d)

    def file(self, path: Path, name: str, st: os.stat_result, explicit: bool) -> InputFile:
        if not stat.S_ISREG(st.st_mode):
            return self.skip(path, name, NotRegularFile(f"{name}: not a regular file"), st)
        ident = (st.st_dev, st.st_ino)
        if ident in self.files:
            first = self.files[ident]
            return InputFile("ignored", path, name, AlreadySeen(f"{name}: same file as {first}"))
        if not os.access(path, os.R_OK):
            return InputFile("skipped", path, name, PermissionDenied(f"{name}: permission denied"))
        suffix = path.suffix.lower()
        kind = "video" if suffix in VIDEO_EXTENSIONS else "image" if suffix in IMAGE_EXTENSIONS else None
        if kind is None:
            try:
                with open(path, "rb") as f:
                    found = sniff_media(f.read(32))
            except OSError as e:
                return InputFile("skipped", path, name, _os_problem(e, name, "file"))
            if found is None:
                problem = NotMedia(f"{name}: not an image or video file")
                # Named on purpose: an error. Met in a folder or pattern: a harmless neighbour.
                return InputFile("skipped" if explicit else "ignored", path, name, problem)
            kind = found[0]
        self.files[ident] = name
        return InputFile(kind, path, name)


def _stat(path: Path, name: str) -> os.stat_result | InputError:
    try:
        return os.stat(path)  # follows links: a link is judged by what it points to
    except FileNotFoundError:
        if os.path.islink(path):
            return BrokenLink(f"{name}: broken symbolic link (its target does not exist)")
        return NoSuchInput(f"{name}: no such file or folder")
    except OSError as e:
        return _os_problem(e, name, "file")


def _os_problem(e: OSError, name: str, what: str) -> InputError:
    if e.errno == errno.ELOOP:
        return LinkLoop(f"{name}: symbolic link loop")
    if e.errno in (errno.EACCES, errno.EPERM):
        return PermissionDenied(f"{name}: permission denied")
    return InputError(f"{name}: cannot read this {what} ({e.strerror or type(e).__name__})")
