"""Helpers for the benchmark tests: run a script, read its CSVs, check PNGs."""

from __future__ import annotations

import csv
import pathlib
import struct
import subprocess
import sys
import zlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str) -> str:
    """Runs `benchmarks/<script>` with `args` from the repository root; stdout.

    The timeout only guards against a hang: on a loaded 2-core machine a
    --quick run has taken several minutes.
    """
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    return result.stdout


def read_csv(path: pathlib.Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(kind, body) of every chunk, asserting each chunk's CRC."""
    offset, chunks = 8, []
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) == crc
        chunks.append((kind, body))
        offset += 12 + length
    return chunks


def assert_valid_png(path: pathlib.Path, min_width: int, min_height: int) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width > min_width and height > min_height
    chunks = _chunks(data)
    kinds = [kind for kind, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    # The image is not blank: its decompressed pixels are not all one value.
    pixels = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(set(pixels[:200_000])) > 10
