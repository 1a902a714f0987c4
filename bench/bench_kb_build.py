"""Benchmark: `cohortflow kb build` with a gnomAD-style population VCF, against bcftools.

Generates (seeded, cached in --workdir) a sites-only population VCF of --records records
(default 2,000,000; SNVs on one contig, 1 in 20 records with two ALTs, INFO AC/AN/AF and five
AF_<population> keys, like a trimmed gnomAD file) and times, side by side, interleaved:

- ``cohortflow kb build CLINVAR -o KB --population POP`` (the CLI as a subprocess, with a
  small real ClinVar slice from ../shared/data so that the population dominates);
- the peer: ``bcftools norm -m -any POP | bcftools query -f '%CHROM %POS %REF %ALT %AF...'``,
  which splits the ALTs and prints the same fields per allele (no sort, no Parquet).

For each it prints wall time, CPU time and the peak RSS of the largest process, then the
ratios. Run it with two --records values to see whether memory grows with the file: before
the KB was built through a spill file, 2,000,000 records took 3.3 GB.

Usage: .venv/bin/python bench/bench_kb_build.py [--records 2000000] [--repeats 2]
       [--workdir /tmp/cohortflow_bench_kb]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from bench_store import interleaved

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CLINVAR = (
    SHARED
    / "clinvar"
    / "macarthur_b37"
    / "clinvar_macarthur_20160910.b37.chr20_9995001-11095000.vcf.gz"
)
POPULATIONS = ("afr", "amr", "eas", "nfe", "sas")
GENERATOR_VERSION = 1


def generate(path: Path, records: int) -> None:
    """A bgzipped sites VCF of ``records`` records on contig 20, seeded."""
    rng = random.Random(records)
    header = [
        "##fileformat=VCFv4.2",
        "##contig=<ID=20,length=63025520>",
        '##INFO=<ID=AC,Number=A,Type=Integer,Description="Alternate allele count">',
        '##INFO=<ID=AN,Number=1,Type=Integer,Description="Total alleles">',
        '##INFO=<ID=AF,Number=A,Type=Float,Description="Alternate allele frequency">',
        *(
            f'##INFO=<ID=AF_{p},Number=A,Type=Float,Description="AF in population {p}">'
            for p in POPULATIONS
        ),
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    step = max(1, 60_000_000 // records)
    bgzip = subprocess.Popen(["bgzip", "-c"], stdin=subprocess.PIPE, stdout=path.open("wb"))
    assert bgzip.stdin is not None
    bgzip.stdin.write(("\n".join(header) + "\n").encode())
    lines: list[str] = []
    pos = 0
    for _ in range(records):
        pos += rng.randint(1, step)
        ref = rng.choice("ACGT")
        others = [b for b in "ACGT" if b != ref]
        n_alt = 2 if rng.random() < 0.05 else 1
        alts = rng.sample(others, n_alt)
        an = 152_000
        acs = [rng.randint(1, 2000) for _ in alts]
        info = [f"AC={','.join(map(str, acs))}", f"AN={an}"]
        info.append("AF=" + ",".join(f"{ac / an:.5g}" for ac in acs))
        for p in POPULATIONS:
            info.append(f"AF_{p}=" + ",".join(f"{rng.random() / 100:.4g}" for _ in alts))
        lines.append(f"20\t{pos}\t.\t{ref}\t{','.join(alts)}\t.\tPASS\t{';'.join(info)}\n")
        if len(lines) >= 100_000:
            bgzip.stdin.write("".join(lines).encode())
            lines = []
    bgzip.stdin.write("".join(lines).encode())
    bgzip.stdin.close()
    if bgzip.wait() != 0:
        sys.exit("bgzip failed")


def population(work: Path, records: int) -> Path:
    """The population VCF for ``records`` in ``work``: reused when made by this generator."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"population_{records}.vcf.gz"
    marker = path.with_suffix(".json")
    made_with = json.dumps({"records": records, "generator": GENERATOR_VERSION})
    if not path.is_file() or not marker.is_file() or marker.read_text() != made_with:
        generate(path, records)
        marker.write_text(made_with)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cohortflow_bench_kb"))
    args = ap.parse_args()
    if not CLINVAR.is_file():
        sys.exit(f"{CLINVAR}: not found; this benchmark needs ../shared/data beside the repo")
    for tool in ("bcftools", "bgzip"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found on PATH; install it (apt-get install -y bcftools tabix)")
    cohortflow = Path(sys.executable).with_name("cohortflow")
    pop = population(args.workdir, args.records)
    kb = args.workdir / "kb"
    fields = "%CHROM\\t%POS\\t%REF\\t%ALT\\t%AF\\t%AC\\t%AN" + "".join(
        f"\\t%AF_{p}" for p in POPULATIONS
    )
    commands = {
        "cohortflow": f"{cohortflow} kb build {CLINVAR} -o {kb} --population {pop} > /dev/null",
        "bcftools": f"bcftools norm -m -any {pop} 2>/dev/null | bcftools query -f '{fields}\\n' "
        "> /dev/null",
    }
    results = interleaved(commands, args.repeats, args.workdir)
    written = json.loads((kb / "manifest.json").read_text())["population"]["written"]
    print(f"{args.records} records, {written} population alleles written")
    med = {n: [statistics.median(v[i] for v in results[n]) for i in range(3)] for n in commands}
    for name, (wall, peak, cpu) in med.items():
        print(f"median {name:10s} wall {wall:6.1f} s  cpu {cpu:6.1f} s  peak {peak:7.1f} MiB")
    (cw, cp, cc), (bw, bp, bc) = med["cohortflow"], med["bcftools"]
    print(f"cohortflow / bcftools: wall {cw / bw:.1f}x  cpu {cc / bc:.1f}x  peak {cp / bp:.0f}x")


if __name__ == "__main__":
    main()
