"""Cheap completeness checks of compressed genomics files: BGZF and CRAM end-of-file markers.

A BGZF file (bgzipped VCF, BAM, tabix/CSI index) is a series of gzip members; one cut at a member
boundary still decompresses without error, so only the 28-byte empty end-of-file block that
htslib writes on close tells a complete file from a truncated one. CRAM 3 files end with a fixed
38-byte EOF container in the same way. Everything here reads a few bytes from each end of a file.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

log = logging.getLogger(__name__)

#: The empty BGZF block htslib writes at the end of every BGZF file (SAM/BAM spec, 4.1.2).
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
#: The EOF container of CRAM 3.x files (CRAM spec, section 9).
CRAM3_EOF = bytes.fromhex(
    "0f000000ffffffff0fe0454f4600000000010005bdd94f0001000606010001000100ee63014b"
)
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def _head(path: Path, n: int) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _tail(path: Path, n: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - n))
        return fh.read(n)


def is_gzip(path: Path) -> bool:
    """True when ``path`` starts with the gzip magic bytes (plain gzip or BGZF)."""
    return _head(Path(path), 2) == _GZIP_MAGIC


def is_bgzf(path: Path) -> bool:
    """True when ``path`` starts with a BGZF block header (gzip with the 'BC' extra subfield).

    In: any file. Out: False for plain text, plain gzip (``gzip``, ``pigz``) and empty files.
    """
    head = _head(Path(path), 18)
    return (
        len(head) == 18
        and head[:4] == b"\x1f\x8b\x08\x04"  # gzip, deflate, FEXTRA set
        and head[12:14] == b"BC"
        and head[14:16] == b"\x02\x00"
    )


def plain_gzip_vcf_problem(path: Path) -> str | None:
    """Why htslib cannot read the VCF ``path``: it is plain gzip, not BGZF; None otherwise.

    In: any path (an unreadable one gives None and is reported by whoever opens it). Out: one
    line naming the file and how to recompress it, or, when the gzip stream is corrupt too
    (checked by decompressing it all), that it cannot be read.
    """
    path = Path(path)
    try:
        plain = is_gzip(path) and not is_bgzf(path)
    except OSError:
        return None
    if not plain:
        return None
    if not gzip_stream_complete(path):
        return (
            f"{path}: cannot be read: gzip stream is truncated or corrupt; copy or create it again"
        )
    return (
        f"{path}: compressed with gzip, not bgzip; recompress it "
        f"(zcat {path.name} | bgzip > new.vcf.gz) so htslib tools can read it"
    )


def has_bgzf_eof(path: Path) -> bool:
    """True when the BGZF file ``path`` ends with the 28-byte BGZF end-of-file block."""
    return _tail(Path(path), len(BGZF_EOF)) == BGZF_EOF


def is_cram(path: Path) -> bool:
    """True when ``path`` starts with the CRAM magic ``CRAM``."""
    return _head(Path(path), 4) == b"CRAM"


def cram_major_version(path: Path) -> int:
    """The CRAM major version of ``path`` (byte 4 of the file definition), e.g. 3."""
    head = _head(Path(path), 6)
    return head[4] if len(head) >= 6 else 0


def has_cram_eof(path: Path) -> bool:
    """True when the CRAM 3 file ``path`` ends with the CRAM 3 EOF container."""
    return _tail(Path(path), len(CRAM3_EOF)) == CRAM3_EOF


def gzip_stream_complete(path: Path) -> bool:
    """True when every gzip member of ``path`` decompresses and the last one is complete.

    Reads the whole file (cost: a full decompression). Plain gzip files have no end marker, so
    this is the only way to tell a truncated one; BGZF files are checked by
    :func:`has_bgzf_eof` instead. False for a corrupt or cut stream, trailing garbage included.
    """
    try:
        with gzip.open(Path(path), "rb") as fh:
            while fh.read(_CHUNK):
                pass
    except (EOFError, OSError, zlib.error) as exc:
        log.debug("%s: gzip stream check failed: %s", path, exc)
        return False
    return True


def compression_problem(path: Path, full_check_bytes: int) -> str | None:
    """One line describing why ``path`` looks truncated or corrupt, or None when it looks whole.

    In: any input file; ``full_check_bytes``: plain gzip files up to this size (bytes) are fully
    decompressed to check them, larger ones are left to the step that reads them.
    BGZF files must end with the BGZF EOF block and CRAM 3 files with the CRAM EOF container
    (both checked from the last bytes, whatever the size). Plain text passes.
    """
    path = Path(path)
    if is_bgzf(path):
        if not has_bgzf_eof(path):
            return (
                "BGZF end-of-file block missing: the file is truncated (cut during copy or "
                "download) or still being written; copy or create it again"
            )
        return None
    if is_cram(path):
        if cram_major_version(path) >= 3 and not has_cram_eof(path):
            return (
                "CRAM end-of-file container missing: the file is truncated; copy or create it again"
            )
        return None
    if is_gzip(path) and path.stat().st_size <= full_check_bytes:
        if not gzip_stream_complete(path):
            return "gzip stream is truncated or corrupt; copy or create the file again"
    return None
