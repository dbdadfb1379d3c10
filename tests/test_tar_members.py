"""TarMembers reads every archive as tarfile's stream mode does: the same members, data
offsets, bytes, exceptions and recorded header errors, whether it decodes the headers itself,
hands the rest of the archive to tarfile at an extension header, or leaves a compressed archive
to tarfile from the start. Archives are cut and garbled at many places to compare the endings.
Where it deliberately differs (malformed extension headers, huge sizes after the end) the
tests at the end say what it does instead.
"""

from __future__ import annotations

import io
import random
import tarfile

import pytest

from curator_udfs import tar_members
from curator_udfs.tar_members import TarMembers, TrackingTarInfo

Transcript = list[object]


def _archive(fmt: int = tarfile.PAX_FORMAT, *, late_extension: bool = True) -> bytes:
    """Plain members first; with `late_extension`, a long name (a pax or GNU header) and a
    link later on, then plain members again."""
    rng = random.Random(3)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:

        def add(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mtime = kind, len(data), 1_700_000_000
            if kind == tarfile.SYMTYPE:
                info.linkname, info.size = "000000.jpg", 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        for i in range(3):
            add(f"{i:06d}.jpg", rng.randbytes(rng.randint(1, 3000)))
            add(f"{i:06d}.txt", b"a caption")
        if late_extension:
            add("long/" + "x" * 120 + ".jpg", rng.randbytes(700))
            add("link.jpg", kind=tarfile.SYMTYPE)
            add("somedir/", kind=tarfile.DIRTYPE)
        for i in range(3, 5):
            add(f"{i:06d}.jpg", rng.randbytes(rng.randint(1, 1500)))
            add(f"{i:06d}.json", b"{}")
    return buf.getvalue()


def _describe(exc: BaseException) -> tuple[str, str]:
    return type(exc).__name__, str(exc)


def _errors(errors: list[Exception]) -> list[tuple[str, str]]:
    return [_describe(e) for e in errors]


def _member(info: tarfile.TarInfo, offset: int | None, read: object) -> tuple[object, ...]:
    return (info.get_info(), info.offset_data if offset is None else offset, read)


def _by_tarfile(data: bytes, compressed: bool) -> Transcript:
    """What tarfile's own stream mode reads (the reference)."""
    out: Transcript = []
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r|*", tarinfo=TrackingTarInfo)
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome compared
        return [("open", _describe(exc))]
    errors: list[Exception] = []
    tar.curator_header_errors = errors  # type: ignore[attr-defined]
    try:
        while True:
            errors.clear()
            info = tar.next()
            if info is None:
                out.append(("end", _errors(errors)))
                return out
            try:
                member = tar.extractfile(info) if info.isreg() else None
                read: object = member.read() if member is not None else None
            except Exception as exc:  # noqa: BLE001
                out.append(_member(info, -1 if compressed else None, _describe(exc)))
                return out
            out.append(_member(info, -1 if compressed else None, read))
    except Exception as exc:  # noqa: BLE001
        out.append(("raised", _describe(exc), _errors(errors)))
        return out


def _by_members(data: bytes) -> Transcript:
    out: Transcript = []
    try:
        tar = TarMembers(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome compared
        return [("open", _describe(exc))]
    try:
        while True:
            tar.header_errors.clear()
            info = tar.next()
            if info is None:
                out.append(("end", _errors(tar.header_errors)))
                return out
            offset = tar.data_offset(info)
            try:
                read: object = tar.read(info, info.size) if info.isreg() else None
            except Exception as exc:  # noqa: BLE001
                out.append(_member(info, -1 if offset is None else offset, _describe(exc)))
                return out
            out.append(_member(info, -1 if offset is None else offset, read))
    except Exception as exc:  # noqa: BLE001
        out.append(("raised", _describe(exc), _errors(tar.header_errors)))
        return out


def _same(data: bytes, compressed: bool = False) -> Transcript:
    expected = _by_tarfile(data, compressed)
    assert _by_members(data) == expected, (len(data), expected[-1])
    return expected


class _Decoded:
    """Counts the headers TarMembers decodes itself (its fast path)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = tar_members._HEADER_FIELDS

        class Spy:
            def unpack_from(_, buf: bytes) -> tuple:  # noqa: N805
                self.calls += 1
                return real.unpack_from(buf)

        monkeypatch.setattr(tar_members, "_HEADER_FIELDS", Spy())


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_whole_archives_read_alike(fmt: int, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = _Decoded(monkeypatch)
    late = fmt != tarfile.USTAR_FORMAT  # ustar cannot hold the 125-character name
    transcript = _same(_archive(fmt, late_extension=late))
    assert transcript[-1] == ("end", [("EOFHeaderError", "end of file header")])
    assert len(transcript) == (14 if late else 11)
    assert decoded.calls >= 6  # the plain members before the extension were decoded here


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz"])
def test_compressed_archives_are_tarfiles(mode: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in [("a.jpg", b"\xff" * 900), ("a.txt", b"hi")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    transcript = _same(buf.getvalue(), compressed=True)
    assert [m[2] for m in transcript[:2]] == [b"\xff" * 900, b"hi"]
    tar = TarMembers(io.BytesIO(buf.getvalue()))
    first = tar.next()
    assert first is not None and tar.data_offset(first) is None


def test_offsets_after_the_hand_over_are_file_offsets() -> None:
    data = _archive(tarfile.PAX_FORMAT)
    tar = TarMembers(io.BytesIO(data))
    seen = 0
    while (info := tar.next()) is not None:
        offset = tar.data_offset(info)
        assert offset is not None
        if info.isreg():
            assert tar.read(info, info.size) == data[offset : offset + info.size]
            seen += 1
    assert seen == 11


def test_cut_archives_end_alike() -> None:
    data = _archive(tarfile.PAX_FORMAT)
    endings = set()
    for cut in [*range(0, 2048, 61), *range(2048, len(data), 173), len(data) - 1024]:
        transcript = _same(data[:cut])
        endings.add(str(transcript[-1])[:40])
    assert len(endings) >= 4  # empty, truncated header, cut data, missing end marker


def test_garbled_archives_end_alike() -> None:
    data = _archive(tarfile.GNU_FORMAT)
    rng = random.Random(11)
    headers = [i for i in range(0, len(data), 512) if data[i + 257 : i + 262] == b"ustar"]
    outcomes = set()
    for _ in range(400):
        block = bytearray(data)
        at = rng.choice(headers) + rng.choice([0, 100, 124, 148, 156, 157, 345, 500])
        block[at] = rng.choice(b"\x00\xff7 xL")
        transcript = _same(bytes(block))
        outcomes.add(str(transcript[-1])[:30])
    assert len(outcomes) >= 3


def test_not_a_tar_and_empty() -> None:
    assert _same(b"")[0][0] == "open"
    assert _same(b"this is not a tar archive at all" * 40)[0][0] == "open"
    assert _same(bytes(10240)) == [("end", [])]  # an empty archive: only the end marker


def test_skipped_members_stream_past(monkeypatch: pytest.MonkeyPatch) -> None:
    """A member never read is skipped in pieces of BUFFER_BYTES, not read whole."""
    monkeypatch.setattr(tar_members, "BUFFER_BYTES", 4096)
    big = random.Random(5).randbytes(100_000)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, payload in [("big.jpg", big), ("b.txt", b"x")]:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    sizes: list[int] = []

    class Source(io.BytesIO):
        def read(self, size: int | None = -1, /) -> bytes:
            sizes.append(-1 if size is None else size)
            return super().read(size)

    tar = TarMembers(Source(buf.getvalue()))
    assert tar.next() is not None  # big.jpg, never read
    second = tar.next()
    assert second is not None and tar.read(second, 1) == b"x"
    assert max(sizes) <= 4096


def _block(fields: dict[int, bytes]) -> bytes:
    """A header block with `fields` at their offsets and a valid checksum."""
    block = bytearray(512)
    for at, value in fields.items():
        block[at : at + len(value)] = value
    block[148:156] = b"%06o\0 " % (256 + sum(block) - sum(block[148:156]))
    return bytes(block)


def _file_member(name: str, data: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info.tobuf(tarfile.GNU_FORMAT) + data + bytes(-len(data) % 512)


def _pax(payload: bytes) -> bytes:
    head = _block({0: b"PaxHeader/b", 124: b"%011o" % len(payload), 156: b"x", 257: b"ustar\x0000"})
    return head + payload + bytes(-len(payload) % 512)


def test_a_garbled_extension_after_plain_members_ends_the_archive() -> None:
    """tarfile refuses an archive whose first header is garbled, but only ends one whose later
    header is: taking over mid-archive must not turn the second into the first."""
    pax = _pax(b"0 x=y\n")
    data = _file_member("a.jpg", b"x" * 10) + pax + _file_member("b.jpg", b"y") + bytes(1024)
    transcript = _same(data)
    assert transcript[-1] == ("end", [("InvalidHeaderError", "invalid header")])
    assert len(transcript) == 2  # a.jpg, then the end


def test_what_tarfiles_extension_parsers_raise_ends_the_archive() -> None:
    """IndexError and UnicodeDecodeError from tarfile's sparse and pax parsers end the archive
    as a garbled header does (tarfile lets them escape)."""
    sparse = _block({0: b"s.bin", 124: b"%011o\0" % 512, 156: b"S", 257: b"ustar  \0",
                     386: b"%011o\0" % 0, 398: b"%011o\0" % 4, 482: b"\x01"})  # fmt: skip
    charset = _pax(b"18 hdrcharset=\xff\xfe\n") + _file_member("b.jpg", b"y") + bytes(1024)
    for rest, raised in [(sparse, "IndexError"), (charset, "UnicodeDecodeError")]:
        data = _file_member("a.jpg", b"x") + rest
        assert _by_tarfile(data, False)[-1][1][0] == raised  # type: ignore[index]
        transcript = _by_members(data)
        assert transcript[-1][0] == "end" and len(transcript) == 2, transcript
        [(kind, message)] = transcript[-1][1]  # type: ignore[misc]
        assert kind == "InvalidHeaderError" and raised in message


def test_a_huge_size_after_the_stream_ended_fails_at_once() -> None:
    """A base-256 size of 2**80 in a cut archive: tarfile's stream seek would loop for ages."""
    big = bytearray(_file_member("big.bin", b""))[:512]
    big[124:136] = b"\x80" + (2**80).to_bytes(11, "big")
    big[148:156] = b"%06o\0 " % (256 + sum(big) - sum(big[148:156]))
    for extension in (b"", _file_member("l" * 120 + ".jpg", b"z")):  # own decoding / tarfile's
        tar = TarMembers(io.BytesIO(_file_member("a.jpg", b"x") + extension + bytes(big) + b"y"))
        names = []
        with pytest.raises(tarfile.ReadError, match="unexpected end of data"):
            while (info := tar.next()) is not None:  # never read: as over max_image_bytes
                names.append(info.name)
        assert names[0] == "a.jpg" and names[-1] == "big.bin" and len(names) == 2 + bool(extension)
