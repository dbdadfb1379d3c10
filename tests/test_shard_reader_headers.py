"""The shard reader's fast tar-header decoding gives what tarfile's own `frombuf` gives.

Every header block of archives written in the three tar formats (long names, links,
directories, pax and GNU extensions), hand-made odd blocks (base-256 size, signed checksum,
V7 directory, garbled numbers, an all-zero block) and thousands of randomly mutated blocks
are decoded both ways: the same TarInfo fields, or the same exception type.
"""

from __future__ import annotations

import io
import random
import struct
import tarfile
from pathlib import Path

import pytest

from curator_udfs import tar_members
from curator_udfs.shard_reader import IngestedSample, ShardReader
from curator_udfs.tar_members import TrackingTarInfo
from tests import badshards as bs

ENCODING, ERRORS = "utf-8", "surrogateescape"


def _archive(fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:

        def add(info: tarfile.TarInfo, data: bytes = b"") -> None:
            info.size = len(data) if info.isreg() else 0
            info.mtime, info.mode, info.uid, info.gid = 1_700_000_000, 0o644, 1000, 1000
            info.uname, info.gname = "curator", "users"
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)

        add(tarfile.TarInfo("000001.jpg"), b"\xff\xd8" * 700)
        add(tarfile.TarInfo("000001.txt"), "ein Bild über Käse".encode())
        add(tarfile.TarInfo("dir/sub/" + "k" * 90 + ".json"), b"{}")  # ustar prefix
        add(tarfile.TarInfo("a" * 60 + "/" + "x" * 90 + ".txt"), b"long")  # > 100 chars
        add(tarfile.TarInfo("naïve café.jpg"), b"\xff")  # non-ASCII name
        empty = tarfile.TarInfo("empty.txt")
        add(empty)
        for kind, name, target in [
            (tarfile.DIRTYPE, "somedir", ""),
            (tarfile.SYMTYPE, "link.jpg", "/etc/shadow"),
            (tarfile.LNKTYPE, "hard.jpg", "000001.jpg"),
            (tarfile.FIFOTYPE, "pipe", ""),
        ]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            add(info)
    return buf.getvalue()


def _header_blocks(data: bytes) -> list[bytes]:
    """Every 512-byte block of `data` that tarfile reads as a header (pax/GNU ones too)."""
    blocks: list[bytes] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for info in tar.getmembers():
            blocks.append(data[info.offset : info.offset + tarfile.BLOCKSIZE])
            # the member's own ustar block follows its pax or GNU long-name blocks
            last = info.offset_data - tarfile.BLOCKSIZE
            blocks.append(data[last : last + tarfile.BLOCKSIZE])
    return blocks


def _with_checksum(block: bytearray, signed: bool = False) -> bytes:
    block[148:156] = b" " * 8
    values = [b - 256 if signed and b > 127 else b for b in block]
    block[148:156] = b"%06o\0 " % sum(values)
    return bytes(block)


def _odd_blocks(regular: bytes) -> list[bytes]:
    base256 = bytearray(regular)
    base256[124:136] = b"\x80" + (1400).to_bytes(11, "big")
    signed = bytearray(regular)
    signed[0:12] = "é-name.jpg\0".encode()
    v7dir = bytearray(regular)
    v7dir[0:8], v7dir[156:157] = b"olddir/\0", b"\0"
    garbled = bytearray(regular)
    garbled[124:136] = b"00000000z12\0"
    spaces = bytearray(regular)
    spaces[100:108] = b"  644 \0\0"
    return [
        _with_checksum(base256),
        _with_checksum(signed, signed=True),
        _with_checksum(signed),
        _with_checksum(v7dir),
        _with_checksum(garbled),
        _with_checksum(spaces),
        regular[:-1],
        b"",
        bytes(tarfile.BLOCKSIZE),
    ]


class _Counting:
    """Stands in for the reader's header struct and counts the headers decoded the fast way."""

    def __init__(self, real: struct.Struct) -> None:
        self.real, self.calls = real, 0

    def unpack_from(self, buf: bytes | bytearray) -> tuple:
        self.calls += 1
        return self.real.unpack_from(buf)


@pytest.fixture
def fast_path(monkeypatch: pytest.MonkeyPatch) -> _Counting:
    counting = _Counting(tar_members._HEADER_FIELDS)
    monkeypatch.setattr(tar_members, "_HEADER_FIELDS", counting)
    return counting


def _decode(cls: type[tarfile.TarInfo], block: bytes) -> object:
    try:
        info = cls.frombuf(block, ENCODING, ERRORS)
    except Exception as exc:  # noqa: BLE001 - the exception type is the outcome compared
        return type(exc)
    return (info.get_info(), getattr(info, "_sparse_structs", None))


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_fast_headers_equal_tarfile(fmt: int, fast_path: _Counting) -> None:
    blocks = _header_blocks(_archive(fmt))
    assert len(blocks) >= 20
    blocks += _odd_blocks(blocks[0])
    for block in blocks:
        expected = _decode(tarfile.TarInfo, block)
        assert _decode(TrackingTarInfo, block) == expected, block[:120]
    assert fast_path.calls >= 6  # the fast path itself was compared, not only the fallback


def test_mutated_headers_equal_tarfile() -> None:
    rng = random.Random(7)
    blocks = _header_blocks(_archive(tarfile.PAX_FORMAT))
    outcomes = set()
    for _ in range(3000):
        block = bytearray(rng.choice(blocks))
        for _ in range(rng.randint(1, 3)):
            block[rng.randrange(tarfile.BLOCKSIZE)] = rng.choice(b"0 7\x00\x80\xff9a/")
        if rng.random() < 0.7:  # mostly valid checksums, so the field decoding is reached
            block = bytearray(_with_checksum(block, signed=rng.random() < 0.1))
        expected = _decode(tarfile.TarInfo, bytes(block))
        assert _decode(TrackingTarInfo, bytes(block)) == expected, bytes(block[:160])
        outcomes.add(expected if isinstance(expected, type) else "ok")
    assert "ok" in outcomes and len(outcomes) >= 2


def test_whole_archives_read_alike() -> None:
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        data = _archive(fmt)
        got = []
        for cls in (tarfile.TarInfo, TrackingTarInfo):
            with tarfile.open(fileobj=io.BytesIO(data), mode="r|", tarinfo=cls) as tar:
                got.append([(m.get_info(), m.offset, m.offset_data, m.pax_headers) for m in tar])
        assert got[0] == got[1] and len(got[0]) == 10


def test_the_reader_decodes_plain_headers_the_fast_way(tmp_path: Path, fast_path: _Counting):
    """Guards the speed-up itself: a tarfile that stopped calling `frombuf` would drop it."""
    members = [m for key in ("a", "b", "c") for m in bs.sample(key)]
    path = bs.write_tar(tmp_path / "plain.tar", members)
    items = list(ShardReader(str(path)))
    assert [i.key for i in items if isinstance(i, IngestedSample)] == ["a", "b", "c"]
    assert fast_path.calls >= len(members)


def _sparse_member(name: str, real: bytes, chunks: list[tuple[int, int]]) -> bytes:
    """An old-GNU sparse member ('S'): its header with the sparse map, then only the chunks'
    bytes (`real` elsewhere zero), padded to whole blocks."""
    data = b"".join(real[o : o + n] for o, n in chunks)
    info = tarfile.TarInfo(name)
    info.size = len(data)
    head = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    head[156:157] = tarfile.GNUTYPE_SPARSE
    for i, (offset, size) in enumerate(chunks):
        head[386 + 24 * i : 410 + 24 * i] = b"%011o\0%011o\0" % (offset, size)
    head[482] = 0  # no extension blocks
    head[483:495] = b"%011o\0" % len(real)
    padding = -len(data) % tarfile.BLOCKSIZE
    return _with_checksum(head) + data + bytes(padding)


def test_sparse_member_is_read_through_its_map(tmp_path: Path, fast_path: _Counting):
    """A sparse member's stored bytes are not its contents: they go through tarfile's map."""
    image = bs.jpeg_bytes()
    real = image + bytes(4096 - len(image) - 2) + b"\xff\xd9"  # a hole inside the member
    chunks = [(0, len(image)), (4096 - 512, 512)]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo("a.txt"), io.BytesIO(b""))
    plain_start = buf.getvalue()[: tarfile.BLOCKSIZE]  # a.txt's header (an empty caption)
    tail = bs.write_tar(tmp_path / "tail.tar", bs.sample("b")).read_bytes()
    path = tmp_path / "sparse.tar"
    path.write_bytes(_sparse_member("a.jpg", real, chunks) + plain_start + tail)
    reader = ShardReader(str(path))
    items = list(reader)
    assert reader.outcome is not None and reader.outcome.status == "ok", reader.outcome
    got = {i.key: i for i in items}
    assert isinstance(got["a"], IngestedSample) and got["a"].image == real
    assert isinstance(got["b"], IngestedSample) and got["b"].image == bs.jpeg_bytes()
    # its stored bytes are not its contents: no byte range to read back in reference mode
    assert got["a"].image_offset is None and got["b"].image_offset is not None
