"""The annotate output layer: BGZF writer, the .tbi built from what was written (compared with
htslib's own index of the same file), block-by-block reading, and the CLI's start-up."""

from __future__ import annotations

import gzip
import random
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pysam
import pytest

from cohortflow import annotate as A
from cohortflow.annotate import annotate_vcf
from cohortflow.kb import build_kb, load_kb

VCF_HEADER = (
    "##fileformat=VCFv4.2\n"
    + "".join(f"##contig=<ID={c},length=300000000>\n" for c in ("chrA", "chrB", "chrC"))
    + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
)


def parse_tbi(path: Path) -> dict:
    """A .tbi as {names, conf, refs: [(bins {bin: sorted chunks}, linear)], tail}."""
    raw = gzip.decompress(path.read_bytes())
    assert raw[:4] == b"TBI\x01"
    n_ref, fmt, col_seq, col_beg, col_end, meta, skip, l_nm = struct.unpack_from("<8i", raw, 4)
    at = 36
    names = raw[at : at + l_nm].split(b"\x00")[:-1]
    at += l_nm
    refs = []
    for _ in range(n_ref):
        (n_bin,) = struct.unpack_from("<i", raw, at)
        at += 4
        bins = {}
        for _ in range(n_bin):
            number, n_chunk = struct.unpack_from("<Ii", raw, at)
            at += 8
            bins[number] = sorted(struct.iter_unpack("<QQ", raw[at : at + 16 * n_chunk]))
            at += 16 * n_chunk
        (n_intv,) = struct.unpack_from("<i", raw, at)
        at += 4
        refs.append((bins, list(struct.unpack_from(f"<{n_intv}Q", raw, at))))
        at += 8 * n_intv
    conf = (fmt, col_seq, col_beg, col_end, meta, skip)
    return {"names": names, "conf": conf, "refs": refs, "tail": raw[at:]}


def write_indexed(
    tmp_path: Path, records: list[tuple[str, int, str, str]], per_block: int = 50
) -> tuple[Path, bytes | None]:
    """Write ``records`` (contig, pos1, REF, INFO) with _BgzfWriter, feeding _TbiRecords block
    by block as the engine does; out: the VCF and our uncompressed index (None: fallback)."""
    path = tmp_path / "out.vcf.gz"
    tbi = A._TbiRecords()
    with A._BgzfWriter(path) as out:
        out.write(VCF_HEADER.encode())
        for i in range(0, len(records), per_block):
            part = records[i : i + per_block]
            lines = [f"{c}\t{p}\t.\t{r}\tA\t.\t.\t{info}\n" for c, p, r, info in part]
            out.write("".join(lines).encode())
            chrom = pa.array([c for c, _, _, _ in part])
            tbi.add(
                chrom,
                A._Contigs.of(chrom),
                pa.array([str(p) for _, p, _, _ in part]),
                np.array([p for _, p, _, _ in part], np.int64),
                pa.array([r for _, _, r, _ in part]),
                pa.array([info for _, _, _, info in part]),
                pa.array(lines),
            )
    return path, A._tbi_index(tbi, len(VCF_HEADER), out.block_sizes)


def htslib_index(tmp_path: Path, vcf: Path) -> dict:
    copy = tmp_path / "htslib.vcf.gz"
    shutil.copy(vcf, copy)
    pysam.tabix_index(str(copy), preset="vcf", force=True)
    return parse_tbi(Path(f"{copy}.tbi"))


def random_records(seed: int, n: int, long_fraction: float) -> list[tuple[str, int, str, str]]:
    """Sorted records on three contigs: mostly short REFs, some deletions of up to 100 kb
    (they land in upper bins and span many linear-index windows), gaps of empty windows."""
    rng = random.Random(seed)
    out = []
    for contig in ("chrA", "chrB", "chrC"):
        pos = rng.randint(1, 200_000)
        for _ in range(n):
            pos += rng.choice((1, 5, 40, 300, 3000, 70_000)) if rng.random() < 0.3 else 0
            long = rng.random() < long_fraction
            length = rng.randint(2, 100_000) if long else rng.randint(1, 4)
            info = f"DP={rng.randint(1, 99)};X={'y' * rng.randint(0, 120)}"
            out.append((contig, pos, "C" * length, info))
    return out


@pytest.mark.parametrize(
    ("seed", "n", "long_fraction"), [(1, 40, 0.0), (2, 900, 0.01), (3, 3000, 0.002)]
)
def test_index_equals_htslib(tmp_path: Path, seed: int, n: int, long_fraction: float) -> None:
    records = random_records(seed, n, long_fraction)
    vcf, ours = write_indexed(tmp_path, records)
    assert ours is not None
    (tmp_path / "ours.tbi").write_bytes(A._bgzf_blocks(ours)[0] + A._BgzfWriter.EOF)
    got, want = parse_tbi(tmp_path / "ours.tbi"), htslib_index(tmp_path, vcf)
    assert got == want
    assert got["names"] == [b"chrA", b"chrB", b"chrC"]
    assert got["conf"] == (2, 1, 2, 0, ord("#"), 0)
    assert (n, 0) in got["refs"][0][0][A._TBI_META_BIN]  # records counted per contig
    # the index answers region queries as htslib's does
    vcf.with_name("out.vcf.gz.tbi").write_bytes((tmp_path / "ours.tbi").read_bytes())
    rng = random.Random(seed)
    with (
        pysam.TabixFile(str(vcf)) as ours_tbx,
        pysam.TabixFile(str(tmp_path / "htslib.vcf.gz")) as ref_tbx,
    ):
        for _ in range(40):
            contig = rng.choice(["chrA", "chrB", "chrC"])
            start0 = rng.randint(0, 3_000_000)
            end0 = start0 + rng.randint(1, 400_000)
            assert list(ours_tbx.fetch(contig, start0, end0)) == list(
                ref_tbx.fetch(contig, start0, end0)
            )


def test_index_when_text_ends_on_a_block_boundary(tmp_path: Path) -> None:
    records = random_records(4, 200, 0.0)
    size = len(VCF_HEADER) + sum(len(f"{c}\t{p}\t.\t{r}\tA\t.\t.\t{i}\n") for c, p, r, i in records)
    pad = -size % A._BgzfWriter.BLOCK  # lengthen the last INFO so the text fills whole blocks
    c, p, r, info = records[-1]
    records[-1] = (c, p, r, info + "Z" * pad)
    vcf, ours = write_indexed(tmp_path, records, per_block=37)
    assert (size + pad) % A._BgzfWriter.BLOCK == 0
    assert ours is not None
    (tmp_path / "ours.tbi").write_bytes(A._bgzf_blocks(ours)[0] + A._BgzfWriter.EOF)
    assert parse_tbi(tmp_path / "ours.tbi") == htslib_index(tmp_path, vcf)


@pytest.mark.parametrize(
    "change",
    [
        lambda r: ("chrA", r[1], r[2], "END=900000"),  # htslib reads INFO/END
        lambda r: ("chrA", r[1], r[2], "SVTYPE=DEL;END=900000"),
        lambda r: ("chrB", r[1], r[2], r[3]),  # chrB again after chrC: unsorted contigs
    ],
)
def test_records_htslib_reads_differently_fall_back(tmp_path: Path, change) -> None:
    records = random_records(5, 30, 0.0)
    records.append(change(records[5]))
    assert write_indexed(tmp_path, records)[1] is None


def test_leading_zero_pos_falls_back(tmp_path: Path) -> None:
    tbi = A._TbiRecords()
    tbi.add(
        pa.array(["chrA"]),
        A._Contigs.of(pa.array(["chrA"])),
        pa.array(["010"]),  # htslib parses POS with strtoll base 0: octal 8, not 10
        np.array([10]),
        pa.array(["A"]),
        pa.array(["."]),
        pa.array(["chrA\t010\t.\tA\tC\t.\t.\t.\n"]),
    )
    assert not tbi.usable


@pytest.mark.parametrize("piece", [777, 70_001, 0xFF00])
def test_bgzf_writer_blocks_and_eof(tmp_path: Path, piece: int) -> None:
    rng = random.Random(9)
    text = "".join(f"chr1\t{i}\t.\tA\tC\t{rng.random():.6f}\n" for i in range(30_000)).encode()
    path = tmp_path / "x.gz"
    with A._BgzfWriter(path) as out:
        for i in range(0, len(text), piece):  # writes that do (not) align with blocks
            out.write(memoryview(text)[i : i + piece])
    data = path.read_bytes()
    assert gzip.decompress(data) == text
    assert data.endswith(A._BgzfWriter.EOF)
    # every member is a BGZF block of at most 0xFF00 input bytes, sizes as recorded
    at, sizes = 0, []
    while at < len(data) - len(A._BgzfWriter.EOF):
        assert data[at : at + 4] == b"\x1f\x8b\x08\x04" and data[at + 12 : at + 14] == b"BC"
        (bsize,) = struct.unpack_from("<H", data, at + 16)
        (isize,) = struct.unpack_from("<I", data, at + bsize - 3)
        assert isize <= 0xFF00
        sizes.append(bsize + 1)
        at += bsize + 1
    assert sizes == out.block_sizes
    assert len(sizes) == -(-len(text) // 0xFF00)
    assert pysam.tabix_index(str(path), seq_col=0, start_col=1, end_col=1, force=True)


def test_span_mismatch_and_escape_fast_path() -> None:
    seq = np.frombuffer(b"ACGTACGTTT", np.uint8)
    refs = pa.array(["CG", "CGTA", "GG", "TTT"])
    data, offsets = A._string_bytes(refs)
    got = A._span_mismatch(seq, np.array([1, 1, 2, 7]), data, offsets, np.arange(4))
    assert got.tolist() == [False, False, True, False]
    values = pa.array(["criteria_provided,_single_submitter", "Benign", "a b=c;d%e"])
    assert A._escape_array(values).to_pylist() == [
        A.escape_info_value(v) for v in values.to_pylist()
    ]
    plain = pa.array(["Benign", "GENE1"])
    assert A._escape_array(plain) is plain  # nothing to escape: the same array back


# --------------------------------------------------------------------------- through annotate_vcf


def build_inputs(tmp_path: Path) -> dict[str, Path]:
    rng = random.Random(21)
    seq = "".join(rng.choice("ACGT") for _ in range(60_000))
    fasta = tmp_path / "ref.fa"
    fasta.write_text(">chr1\n" + "\n".join(seq[i : i + 60] for i in range(0, len(seq), 60)) + "\n")
    pysam.faidx(str(fasta))
    sites = sorted({rng.randint(2, 59_000) for _ in range(3000)})
    kb_lines, sample_lines = [], []
    for k, pos1 in enumerate(sites):
        ref = seq[pos1 - 1]
        if k % 10 == 0 and seq[pos1 + 2] != seq[pos1 - 1]:  # a deletion, left-aligned
            ref, alt = seq[pos1 - 1 : pos1 + 3], seq[pos1 - 1]
        else:
            alt = "ACGT".replace(ref, "")[k % 3]
        if k % 3 == 0:
            kb_lines.append(
                f"chr1\t{pos1}\t{k}\t{ref}\t{alt}\t.\t.\tALLELEID={k};CLNSIG=Pathogenic;"
                f"CLNREVSTAT=criteria_provided,_single_submitter;CLNDN=D_{k % 7};GENEINFO=G{k}:1"
            )
        sample_lines.append(f"chr1\t{pos1}\t.\t{ref}\t{alt}\t50\tPASS\tDP=9\tGT\t0/1")
    clinvar = tmp_path / "clinvar.vcf"
    clinvar.write_text(
        "##fileformat=VCFv4.1\n##fileDate=2025-06-01\n"
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "\n".join(kb_lines) + "\n"
    )
    sample = tmp_path / "sample.vcf"
    sample.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=chr1,length=60000>\n"
        '##INFO=<ID=DP,Number=1,Type=Integer,Description="Depth">\n'
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\n"
        + "\n".join(sample_lines)
        + "\n"
    )
    build_kb(clinvar, tmp_path / "kb", reference=fasta)
    return {"fasta": fasta, "sample": sample, "kb": tmp_path / "kb", "n": len(sites)}


def test_small_blocks_give_the_same_output_and_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = build_inputs(tmp_path)
    built = []
    tbi_index = A._tbi_index
    monkeypatch.setattr(A, "_tbi_index", lambda *a: built.append(tbi_index(*a)) or built[-1])
    outs = {}
    for name, block_bytes in (("one", 64 << 20), ("many", 4000)):
        monkeypatch.setattr(A, "_BLOCK_BYTES", block_bytes)
        out = tmp_path / name / "out.vcf.gz"
        audit = annotate_vcf(
            inputs["sample"],
            inputs["kb"],
            inputs["fasta"],
            out,
            findings_tsv=tmp_path / name / "findings.tsv",
        )
        outs[name] = (
            out.read_bytes(),  # BGZF blocks cut at the same text offsets whatever the blocks
            Path(f"{out}.tbi").read_bytes(),
            (tmp_path / name / "findings.tsv").read_text(),
            {k: v for k, v in audit.items() if k != "input"},
        )
        assert parse_tbi(Path(f"{out}.tbi")) == htslib_index(tmp_path / name, out)
    assert outs["one"] == outs["many"]
    assert len(built) == 2 and None not in built  # our index, not the pysam fallback
    compressed, _, findings, audit = outs["many"]
    text = gzip.decompress(compressed)
    assert audit["records"] == inputs["n"]
    matched = sum(v["matched"] for v in audit["clinvar"].values())
    assert matched == len(findings.splitlines()) - 1 == -(-inputs["n"] // 3)
    assert text.count(b"CLNSIG=Pathogenic") == matched


def test_load_kb_columns_and_no_dataset_import(tmp_path: Path) -> None:
    inputs = build_inputs(tmp_path)
    kb = load_kb(inputs["kb"], columns=["variant_id", "clnsig", "af", "no_such_column"])
    assert kb.clinvar.column_names == ["variant_id", "clnsig"]
    assert kb.clinvar.num_rows == -(-inputs["n"] // 3)
    code = (
        "import sys; from cohortflow.kb import load_kb; "
        f"kb = load_kb({str(inputs['kb'])!r}); "
        "print(kb.clinvar.num_rows, 'pyarrow.dataset' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == [str(kb.clinvar.num_rows), "False"]


def test_cli_annotate_runs_without_pandas(tmp_path: Path) -> None:
    inputs = build_inputs(tmp_path)
    out = tmp_path / "cli.vcf.gz"
    code = (
        "import sys; from cohortflow.cli import main; rc = main(['annotate', "
        f"{str(inputs['sample'])!r}, '--kb', {str(inputs['kb'])!r}, '--reference', "
        f"{str(inputs['fasta'])!r}, '-o', {str(out)!r}, '--findings', "
        f"{str(tmp_path / 'f.tsv')!r}, '--audit', {str(tmp_path / 'a.json')!r}]); "
        "print('PANDAS', 'pandas' in sys.modules, rc, file=sys.stderr)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "PANDAS False 0" in run.stderr, run.stderr[-2000:]
    with pysam.VariantFile(str(out)) as vf:
        assert sum("CLNSIG" in rec.info for rec in vf) == -(-inputs["n"] // 3)
    assert len((tmp_path / "f.tsv").read_text().splitlines()) == 1 + -(-inputs["n"] // 3)


def test_bgzf_with_zlib_when_isal_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(A, "_deflate", zlib)
    monkeypatch.setattr(A, "_DEFLATE_LEVEL", 6)
    text = b"".join(b"chr1\t%d\t.\tA\tC\t.\t.\t.\n" % i for i in range(1, 20_000))
    path = tmp_path / "z.vcf.gz"
    with A._BgzfWriter(path) as out:
        out.write(b"#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        out.write(text)
    assert gzip.decompress(path.read_bytes()).endswith(text)
    pysam.tabix_index(str(path), preset="vcf", force=True)
    with pysam.TabixFile(str(path)) as tbx:
        assert [r.split("\t")[1] for r in tbx.fetch("chr1", 99, 102)] == ["100", "101", "102"]
