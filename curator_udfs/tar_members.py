"""The members of a tar stream, in order, without tarfile's per-member overhead where it can.

ShardReader reads every shard member by member, forward only. For an uncompressed archive of
plain files (what webdataset, img2dataset and tarfile write) the headers are decoded here, one
struct call each, and the members' bytes come from one buffered stream: tarfile's stream
machinery (its `_Stream` buffer, `next()`'s bookkeeping) was 40 % of reading a shard.
Everything else is tarfile's own work: a compressed archive from its start, and, from the first
header that is not a plain one (pax and GNU extensions, sparse members), the rest of the
archive. Both ways give the same members, data offsets and bytes, the same exceptions and the
same recorded header errors (tests/test_tar_members.py reads archives both ways), with three
deliberate differences: a plain archive whose first member's name happens to start with a
compression magic is read, not refused; a huge size (base-256) after the stream ended fails at
once, where tarfile's stream seek would loop over it; and what tarfile's extension parsers
raise on malformed headers (IndexError, ValueError) ends the archive as a garbled header does,
instead of escaping as an error no caller expects.
"""

from __future__ import annotations

import functools
import io
import struct
import tarfile
import zlib
from typing import IO, Protocol, Self, cast

__all__ = ["TarMembers", "TrackingTarInfo"]

BLOCK = tarfile.BLOCKSIZE
ENCODING, ERRORS = tarfile.ENCODING, "surrogateescape"  # TarFile's defaults
# Bytes fetched from the source per read. A skipped member passes through in pieces of this
# size, so memory stays bounded whatever a member's size.
BUFFER_BYTES = 256 << 10

# A ustar/GNU header's own fields (name, size, mtime, checksum, type) and, apart, the ones most
# members of an archive share (mode, uid, gid; link name, user and group names, device
# numbers, name prefix: the 8 bytes of magic and version skipped), decoded once per distinct
# set of them (`_shared_fields`).
_HEADER_FIELDS = struct.Struct("100s24x12s12s8sc")
_IDS = struct.Struct("8s8s8s")  # bytes 100-123
_TAIL = struct.Struct("100s8x32s32s8s8s155s")  # bytes 157-499
# Regular files only: directories, links, devices, sparse and contiguous files: tarfile's frombuf
_PLAIN_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)
# Headers that tarfile's `_proc_member` expands with the blocks that follow them.
_EXTENSION_TYPES = frozenset(
    [
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
        tarfile.GNUTYPE_SPARSE,
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
    ]
)


class Readable(Protocol):
    """A byte source read front to back (a file, an fsspec stream)."""

    def read(self, size: int = -1, /) -> bytes: ...


def _octal(field: bytes) -> int:
    """A NUL/space-padded octal number field, as tarfile's `nti` reads it (ValueError if not)."""
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def _text(field: bytes, encoding: str, errors: str) -> str:
    return field.split(b"\0", 1)[0].decode(encoding, errors)


def _byte_sum(block: bytes | bytearray) -> int:
    """The sum of a 512-byte block's bytes. Adler-32's first half is 1 + that sum modulo 65521,
    exact for 256 bytes (at most 65,280): two C calls instead of a Python loop over 512."""
    view = memoryview(block)
    return (zlib.adler32(view[:256]) & 0xFFFF) + (zlib.adler32(view[256:]) & 0xFFFF) - 2


@functools.lru_cache(maxsize=256)
def _shared_fields(
    ids: bytes, tail: bytes, encoding: str, errors: str
) -> tuple[int, int, int, str, str, str, int, int, str]:
    """mode, uid, gid, link name, user and group names, device numbers and name prefix from
    their header bytes (ValueError if a number is not octal). The same in most members of an
    archive: cached, decoding them was half of a header's cost."""
    mode, uid, gid = (_octal(f) for f in _IDS.unpack(ids))
    link, uname, gname, major, minor, prefix = _TAIL.unpack(tail)
    return (
        mode,
        uid,
        gid,
        _text(link, encoding, errors),
        _text(uname, encoding, errors),
        _text(gname, encoding, errors),
        _octal(major),
        _octal(minor),
        _text(prefix, encoding, errors),
    )


class TrackingTarInfo(tarfile.TarInfo):
    """TarInfo that records header errors, so a clean end can be told from a truncated one.

    In stream mode tarfile ends iteration silently on a short or garbled header after the
    first member; the recorded error (TarMembers.header_errors) says which it was.

    It also decodes the common header (a regular file, octal numbers, a valid unsigned
    checksum) in one struct call, and the fields members share once: tarfile's field-by-field
    decoding was about half of ingest's tar reading. Every other header (links, directories,
    pax and GNU extensions, base-256 numbers, odd checksums, a short or empty block) goes to
    tarfile's own `frombuf`, and tests/test_shard_reader_headers.py checks both give the same
    TarInfo.
    """

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        if len(buf) != BLOCK or buf[156:157] not in _PLAIN_FILE_TYPES:
            return super().frombuf(buf, encoding, errors)
        name, size, mtime, chksum, kind = _HEADER_FIELDS.unpack_from(buf)
        try:
            numbers = _octal(chksum), _octal(size), _octal(mtime)
            shared = _shared_fields(bytes(buf[100:124]), bytes(buf[157:500]), encoding, errors)
        except ValueError:  # base-256 or garbled numbers: tarfile decides
            return super().frombuf(buf, encoding, errors)
        # the unsigned checksum, the checksum field counted as spaces (tarfile also accepts
        # the signed one, and raises its own error when neither matches)
        if numbers[0] != 256 + _byte_sum(buf) - sum(buf[148:156]):
            return super().frombuf(buf, encoding, errors)
        obj = cls()
        obj.name = _text(name, encoding, errors)
        if obj.name.endswith("/"):  # a V7 directory: tarfile's rules apply
            return super().frombuf(buf, encoding, errors)
        obj.chksum, obj.size, obj.mtime = numbers
        (obj.mode, obj.uid, obj.gid, obj.linkname, obj.uname, obj.gname, obj.devmajor,
         obj.devminor, head) = shared  # fmt: skip
        obj.type = kind
        if head:  # a ustar long name
            obj.name = head + "/" + obj.name
        return obj

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(tar)
        except tarfile.HeaderError as exc:
            errors = getattr(tar, "curator_header_errors", None)
            if errors is not None:
                errors.append(exc)
            raise


class _TrackingTarFile(tarfile.TarFile):
    """TarFile that knows where to record header errors before it reads its first member."""

    def __init__(self, *args: object, header_errors: list[Exception], **kwargs: object) -> None:
        self.curator_header_errors = header_errors
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


class _Raw(io.RawIOBase):
    """A read()-only source as the raw layer of an io.BufferedReader."""

    def __init__(self, source: Readable) -> None:
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Prefixed:
    """A header block already read, then the rest of the stream: what tarfile reads from."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head, self._rest = head, rest

    def read(self, size: int = -1) -> bytes:
        head = self._head
        if not head:
            return self._rest.read(size)
        self._head = b"" if size < 0 else head[size:]
        out = head if size < 0 else head[:size]
        more = -1 if size < 0 else size - len(out)
        return out + self._rest.read(more) if more else out


class TarMembers:
    """A tar stream's members, front to back: `next()` as `TarFile.next`, `read()` a member's
    first bytes, `data_offset()` where a member's bytes lie in the archive file.

    Raises what `tarfile.open` (in the constructor) and `TarFile.next` raise. Each header error
    met is appended to `header_errors` (the caller clears it per member): the last one says
    whether the archive ended cleanly. The TarInfo offsets of members read after tarfile took
    over count from where it took over: `data_offset()` is the file's.
    """

    def __init__(self, source: Readable) -> None:
        self.header_errors: list[Exception] = []
        self._file = io.BufferedReader(_Raw(source), BUFFER_BYTES)
        self._pos = 0  # the archive offset of the next unread byte (own decoding)
        self._next_header = 0
        self._base = 0  # the archive offset where tarfile took over
        self._tar: tarfile.TarFile | None = None
        self._ended = False
        self.compressed = False
        if not _plain_header(self._file.peek(BLOCK)[:BLOCK]):
            try:
                tar = self._hand_over(self._file, "r|*")
            except _MALFORMED as exc:
                raise tarfile.ReadError(_malformed(exc)) from None
            self.compressed = getattr(tar.fileobj, "comptype", "tar") != "tar"

    def _hand_over(self, stream: IO[bytes] | _Prefixed, mode: str) -> tarfile.TarFile:
        """Let tarfile read the rest of the archive (it reads its first member now)."""
        # stream mode only calls read(); typeshed knows neither that nor the extra keyword
        self._tar = _TrackingTarFile.open(  # type: ignore[call-overload]
            fileobj=cast(IO[bytes], stream),
            mode=mode,
            tarinfo=TrackingTarInfo,
            header_errors=self.header_errors,
        )
        return self._tar

    def next(self) -> tarfile.TarInfo | None:
        """The next member's TarInfo; None at the end of the archive (or at a header that
        ends it early: see `header_errors`)."""
        if self._ended:
            return None
        if self._tar is not None:
            if self._tar.firstmember is None:  # type: ignore[attr-defined]
                _catch_up(self._tar)
            try:
                info = self._tar.next()
            except _MALFORMED as exc:
                self._end(_INVALID_HEADER(_malformed(exc)))
                return None
            self._tar.members = []  # type: ignore[attr-defined]  # stream mode keeps them all
            return info
        self._skip_to(self._next_header)
        offset = self._pos
        block = self._file.read(BLOCK)
        self._pos += len(block)
        try:
            info = TrackingTarInfo.frombuf(block, ENCODING, ERRORS)
        except tarfile.HeaderError as exc:  # after the first member: the archive ends here
            self._end(exc)
            return None
        if info.type in _EXTENSION_TYPES:  # its meaning spans the next blocks: tarfile's job
            self._base = offset
            try:
                self._hand_over(_Prefixed(block, self._file), "r|")
            except tarfile.ReadError:
                # tarfile's first member is no archive's first here: a header error that
                # would refuse an archive (not one of the blocks after it) ends it instead
                last = self.header_errors[-1] if self.header_errors else None
                if isinstance(last, _FIRST_HEADER_ERRORS):
                    self._end(None)
                    return None
                raise
            except _MALFORMED as exc:
                self._end(_INVALID_HEADER(_malformed(exc)))
                return None
            return self.next()
        # what tarfile's `_proc_builtin` does (no pax headers can be in force here)
        info.offset, info.offset_data = offset, offset + BLOCK
        skipped = info.isreg() or info.type not in tarfile.SUPPORTED_TYPES
        try:  # newer Pythons refuse a negative size here (gh-130577)
            data_blocks = info._block(info.size) if skipped else 0  # type: ignore[attr-defined]
        except tarfile.HeaderError as exc:
            self._end(exc)
            return None
        self._next_header = info.offset_data + data_blocks
        if info.isdir():
            info.name = info.name.rstrip("/")
        return info

    def _end(self, error: Exception | None) -> None:
        """The archive ends here, `error` (recorded if given) saying why."""
        if error is not None:
            self.header_errors.append(error)
        self._ended = True

    def read(self, info: tarfile.TarInfo, size: int) -> bytes:
        """The first `size` bytes of the member `next()` returned last; a short read means a
        cut stream (tarfile.ReadError)."""
        if self._tar is not None:
            data = _tarfile_read(self._tar, info, size)
        else:
            self._skip_to(info.offset_data)
            data = self._file.read(size)
            self._pos += len(data)
        if len(data) != size:
            raise tarfile.ReadError("unexpected end of data")
        return data

    def data_offset(self, info: tarfile.TarInfo) -> int | None:
        """Where the member's bytes start in the archive file; None when it is compressed (an
        offset into the decompressed stream is no byte range of the file) or sparse (its
        stored bytes leave out the holes)."""
        if self.compressed or info.issparse():
            return None
        return info.offset_data + self._base

    def _skip_to(self, offset: int) -> None:
        """Read forward to `offset`, as tarfile's stream `seek` does (never backwards)."""
        if offset < self._pos:
            raise tarfile.StreamError("seeking backwards is not allowed")
        _read_past(self._file, offset - self._pos)
        self._pos = offset


# What tarfile's pax, GNU and sparse header parsers raise on malformed input besides its own
# errors (an index past a short block, a number or charset that does not parse).
_MALFORMED = (IndexError, ValueError)
_INVALID_HEADER = tarfile.InvalidHeaderError  # type: ignore[attr-defined]  # typeshed omits it
# The header errors tarfile turns into ReadError at an archive's first header (TarFile.next).
_FIRST_HEADER_ERRORS = (
    _INVALID_HEADER,
    tarfile.EmptyHeaderError,  # type: ignore[attr-defined]
    tarfile.TruncatedHeaderError,  # type: ignore[attr-defined]
)


def _malformed(exc: Exception) -> str:
    return f"malformed extension header ({type(exc).__name__}: {exc})"


def _catch_up(tar: tarfile.TarFile) -> None:
    """Read tarfile's stream forward to its next header, failing where the data ends as
    tarfile does: its own stream seek would go on looping over a huge size after the end."""
    stream = tar.fileobj
    _read_past(stream, tar.offset - stream.tell())  # type: ignore[arg-type,attr-defined]


def _read_past(stream: Readable, size: int) -> None:
    """Read and drop `size` bytes in pieces of BUFFER_BYTES (memory stays bounded whatever a
    member's size); tarfile.ReadError where the data ends first."""
    while size > 0:
        got = len(stream.read(min(size, BUFFER_BYTES)))
        if not got:
            raise tarfile.ReadError("unexpected end of data")
        size -= got


def _plain_header(block: bytes) -> bool:
    """True when `block` is a whole, valid header of a member tarfile needs no help with."""
    try:
        info = TrackingTarInfo.frombuf(block, ENCODING, ERRORS)
    except tarfile.HeaderError:
        return False
    return info.type not in _EXTENSION_TYPES


def _tarfile_read(tar: tarfile.TarFile, info: tarfile.TarInfo, size: int) -> bytes:
    """A member's first bytes through tarfile. A plain member is read straight from the
    archive's stream (it stands at the data right after the header): `extractfile`'s buffered
    wrapper cost a third of tar reading. A sparse member's data is not contiguous:
    `extractfile` follows its map."""
    if info.issparse():
        return tar.extractfile(info).read(size)  # type: ignore[union-attr]  # a regular member
    stream = tar.fileobj
    if stream.tell() != info.offset_data:
        stream.seek(info.offset_data)  # forward only: never needed after a header
    return stream.read(size)
