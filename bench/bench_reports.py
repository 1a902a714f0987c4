"""Benchmark: HTML reports for a 200-sample cohort store (target: all reports in under a minute).

Generates (seeded, cached in --workdir) a cohort of --samples single-sample annotated VCFs over
--sites alleles on three contigs (population AFs from a Beta(0.4, 2) distribution, genotypes in
Hardy-Weinberg proportions, a gVCF block over every contig so that what a sample does not
carry is hom-ref, about 1 % of the alleles ClinVar pathogenic or likely pathogenic
at low AF and 2 % VUS, consequences and protein changes on a third), a QC JSON and a mosdepth
global distribution per sample, and aggregates them into one store (untimed; its time is
printed). Then, per repeat, it times

- in-process: ``write_sample_report`` for every sample and ``write_cohort_report`` in one
  Python process, one after the other;
- batch: ``write_sample_reports`` (one store connection for all samples) and
  ``write_cohort_report``: what the pipeline's ``report_samples`` job (one per batch) does;
- per-job: every report in its own ``python -c`` process, 2 at a time, as a rule with one job
  per sample would run with --cores 2 (Python start-up and imports included; Snakemake's own
  scheduling overhead is not); kept to show why the pipeline uses one job per batch;

and prints each wall time, best-of and spread. There is no peer tool that writes comparable
clinical reports, so the ratio printed is against the 60 s target.

Usage: .venv/bin/python bench/bench_reports.py [--samples 200] [--sites 20000] [--repeats 3]
       [--workdir /tmp/cohortflow_bench_reports]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pysam

from cohortflow.report import write_cohort_report, write_sample_report, write_sample_reports
from cohortflow.store import SampleInput, aggregate

CONTIGS = {"chr1": 8_000_000, "chr2": 6_000_000, "chrX": 4_000_000}
HEADER = """##fileformat=VCFv4.2
##FILTER=<ID=PASS,Description="All filters passed">
{contigs}
##INFO=<ID=CLNSIG,Number=.,Type=String,Description="ClinVar significance">
##INFO=<ID=CLNREVSTAT,Number=.,Type=String,Description="ClinVar review status">
##INFO=<ID=CLN_STARS,Number=1,Type=Integer,Description="Review stars">
##INFO=<ID=CLNDN,Number=.,Type=String,Description="Condition">
##INFO=<ID=CLNVID,Number=1,Type=String,Description="ClinVar variation ID">
##INFO=<ID=GENE,Number=1,Type=String,Description="Gene">
##INFO=<ID=CONSEQUENCE,Number=1,Type=String,Description="Consequence">
##INFO=<ID=PROTEIN_CHANGE,Number=1,Type=String,Description="Amino-acid change">
##INFO=<ID=POP_AF,Number=A,Type=Float,Description="Population AF">
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Depth">
##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Genotype quality">
"""
SIGNIFICANCE = ("Pathogenic", "Likely_pathogenic", "Pathogenic/Likely_pathogenic")
CONSEQUENCES = ("missense", "synonymous", "intron", "stop_gained", "frameshift")
AMINO = "ACDEFGHIKLMNPQRSTVWY"


def _sites(n_sites: int, rng: np.random.Generator) -> list[dict]:
    """Allele records: contig, pos1, ref, alt, af and INFO text."""
    sites = []
    names = list(CONTIGS)
    share = np.array([CONTIGS[c] for c in names], dtype=float)
    per_contig = rng.multinomial(n_sites, share / share.sum())
    for contig, n in zip(names, per_contig, strict=True):
        positions = np.sort(rng.choice(CONTIGS[contig] - 10, size=n, replace=False) + 1)
        for pos1 in positions.tolist():
            ref = "ACGT"[rng.integers(4)]
            kind = rng.random()
            if kind < 0.85:
                alt = "ACGT".replace(ref, "")[rng.integers(3)]
            elif kind < 0.93:
                alt = ref + "".join("ACGT"[i] for i in rng.integers(0, 4, rng.integers(1, 4)))
            else:
                ref = ref + "".join("ACGT"[i] for i in rng.integers(0, 4, rng.integers(1, 4)))
                alt = ref[0]
            af = float(rng.beta(0.4, 2.0))
            info = []
            draw = rng.random()
            if draw < 0.01:
                af = float(rng.uniform(0.002, 0.02))
                sig = SIGNIFICANCE[rng.integers(3)]
                info.append(
                    f"CLNSIG={sig};CLN_STARS={rng.integers(0, 5)};CLNDN=Disease_{pos1 % 97}"
                )
                info.append(f"CLNVID={100000 + len(sites)};POP_AF={af:.5f}")
            elif draw < 0.03:
                info.append(f"CLNSIG=Uncertain_significance;CLNVID={100000 + len(sites)}")
            if rng.random() < 0.33:
                cq = CONSEQUENCES[rng.integers(len(CONSEQUENCES))]
                aa, to = AMINO[rng.integers(20)], AMINO[rng.integers(20)]
                n_aa = int(rng.integers(1, 900))
                info.append(
                    f"GENE=G{pos1 % 300};CONSEQUENCE={cq};PROTEIN_CHANGE={n_aa}{aa}>{n_aa}{to}"
                )
            sites.append(
                {
                    "contig": contig,
                    "pos1": pos1,
                    "ref": ref,
                    "alt": alt,
                    "af": af,
                    "info": ";".join(info) or ".",
                }
            )
    return sites


def _write_sample(folder: Path, sample: str, sites: list[dict], carried: np.ndarray, rng) -> Path:
    lines = [
        HEADER.format(
            contigs="\n".join(f"##contig=<ID={c},length={n}>" for c, n in CONTIGS.items())
        ).rstrip("\n"),
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + sample,
    ]
    for i in np.flatnonzero(carried).tolist():
        s = sites[i]
        gt = "1/1" if carried[i] == 2 else "0/1"
        dp = int(rng.integers(15, 45))
        fields = [s["contig"], str(s["pos1"]), ".", s["ref"], s["alt"], "50", "PASS", s["info"]]
        lines.append("\t".join([*fields, "GT:DP:GQ", f"{gt}:{dp}:{min(99, 2 * dp)}"]))
    text = folder / f"{sample}.vcf"
    text.write_text("\n".join(lines) + "\n")
    out = folder / f"{sample}.vcf.gz"
    pysam.tabix_compress(str(text), str(out), force=True)
    text.unlink()
    return out


def _write_gvcf(folder: Path, sample: str) -> Path:
    """A gVCF of one reference block per contig: every site the sample does not carry is
    called hom-ref (as with real gVCFs), so cohort counts and kinship are meaningful."""
    lines = [
        "##fileformat=VCFv4.2",
        *(f"##contig=<ID={c},length={n}>" for c, n in CONTIGS.items()),
        '##ALT=<ID=*,Description="Any other allele">',
        '##INFO=<ID=END,Number=1,Type=Integer,Description="End of the block">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Depth">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + sample,
    ]
    for contig, length in CONTIGS.items():
        lines.append(f"{contig}\t1\t.\tN\t<*>\t.\t.\tEND={length}\tGT:DP\t0/0:30")
    text = folder / f"{sample}.g.vcf"
    text.write_text("\n".join(lines) + "\n")
    out = folder / f"{sample}.g.vcf.gz"
    pysam.tabix_compress(str(text), str(out), force=True)
    text.unlink()
    return out


def _write_qc(folder: Path, sample: str, sex: str, rng: np.random.Generator) -> Path:
    mean = float(rng.normal(32, 3))
    qc = {
        "sample": sample,
        "total_reads": int(rng.integers(8_000_000, 12_000_000)),
        "mapped_fraction": round(float(rng.uniform(0.97, 0.999)), 6),
        "duplicate_fraction": round(float(rng.uniform(0.02, 0.12)), 6),
        "mean_coverage": round(mean, 6),
        "median_coverage": int(mean),
        "fraction_20x": round(float(rng.uniform(0.85, 0.98)), 6),
        "insert_size_median": int(rng.integers(330, 370)),
        "inferred_sex": sex,
        "declared_sex": sex,
        "qc_pass": True,
        "qc_fail_reasons": [],
        "thresholds": {
            "min_mean_coverage": 20,
            "min_mapped_fraction": 0.95,
            "max_duplicate_fraction": 0.3,
        },
    }
    path = folder / f"{sample}.qc.json"
    path.write_text(json.dumps(qc, indent=2) + "\n")
    depths = np.arange(0, 80)
    frac = 1.0 / (1.0 + np.exp((depths - mean) / 3.0))
    (folder / f"{sample}.mosdepth.global.dist.txt").write_text(
        "".join(f"total\t{d}\t{f:.2f}\n" for d, f in zip(depths[::-1], frac[::-1], strict=True))
    )
    return path


def build_store(
    workdir: Path, n_samples: int, n_sites: int, n_batches: int = 1
) -> tuple[Path, list[str]]:
    """The cohort store (cached: rebuilt only when the parameters change), appended in
    ``n_batches`` batches of consecutive samples."""
    store = workdir / "store"
    stamp = workdir / "params.json"
    samples = [f"P{i:04d}" for i in range(n_samples)]
    wanted = {"samples": n_samples, "sites": n_sites, "seed": 7, "gvcf": True}
    if n_batches > 1:
        wanted["batches"] = n_batches
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted and store.is_dir():
        return store, samples
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "inputs").mkdir(parents=True)
    rng = np.random.default_rng(7)
    sites = _sites(n_sites, rng)
    afs = np.array([s["af"] for s in sites])
    inputs = []
    t0 = time.perf_counter()
    for k, sample in enumerate(samples):
        carried = (rng.random((2, len(sites))) < afs).sum(axis=0)
        sex = ("female", "male")[k % 2]
        vcf = _write_sample(workdir / "inputs", sample, sites, carried, rng)
        qc = _write_qc(workdir / "inputs", sample, sex, rng)
        gvcf = _write_gvcf(workdir / "inputs", sample)
        inputs.append(SampleInput(sample, vcf, gvcf=gvcf, qc_json=qc, sex=sex))
    t1 = time.perf_counter()
    per = -(-n_samples // n_batches)
    for b in range(n_batches):
        aggregate(store, f"batch{b + 1}", inputs[b * per : (b + 1) * per],
                  metadata={"reference_build": "GRCh38", "caller": "bench"})  # fmt: skip
    t2 = time.perf_counter()
    print(f"inputs written in {t1 - t0:.1f} s; store aggregated in {t2 - t1:.1f} s (untimed)")
    stamp.write_text(json.dumps(wanted))
    return store, samples


def run_in_process(store: Path, samples: list[str], out: Path, inputs: Path) -> float:
    t0 = time.perf_counter()
    for sample in samples:
        write_sample_report(
            store, sample, out / f"{sample}.html", qc_json=inputs / f"{sample}.qc.json"
        )
    write_cohort_report(store, out / "cohort.html")
    return time.perf_counter() - t0


def run_batch(store: Path, samples: list[str], out: Path, inputs: Path) -> float:
    t0 = time.perf_counter()
    qc_jsons = {s: inputs / f"{s}.qc.json" for s in samples}
    write_sample_reports(store, samples, out, qc_jsons=qc_jsons)
    write_cohort_report(store, out / "cohort.html")
    return time.perf_counter() - t0


def run_per_job(store: Path, samples: list[str], out: Path, inputs: Path, jobs: int) -> float:
    def one(sample: str | None) -> None:
        if sample is None:
            code = (
                "from pathlib import Path; from cohortflow.report import write_cohort_report; "
                f"write_cohort_report(Path({str(store)!r}), Path({str(out / 'cohort.html')!r}))"
            )
        else:
            code = (
                "from pathlib import Path; from cohortflow.report import write_sample_report; "
                f"write_sample_report(Path({str(store)!r}), {sample!r}, "
                f"Path({str(out / (sample + '.html'))!r}), "
                f"qc_json=Path({str(inputs / (sample + '.qc.json'))!r}))"
            )
        subprocess.run([sys.executable, "-c", code], check=True)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, [*samples, None]))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--sites", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--batches", type=int, default=1,
        help="append the store in this many batches; also time the last batch's report job",
    )  # fmt: skip
    ap.add_argument(
        "--jobs", type=int, default=2, help="parallel jobs of the per-job mode (0: skip it)"
    )
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cohortflow_bench_reports"))
    args = ap.parse_args()
    store, samples = build_store(args.workdir, args.samples, args.sites, args.batches)
    inputs = args.workdir / "inputs"
    out = args.workdir / "reports"
    out.mkdir(exist_ok=True)
    per_job = f"per-job x{args.jobs}"
    times: dict[str, list[float]] = {"in-process": [], "batch": []}
    if args.jobs:
        times[per_job] = []
    last = samples[-(-len(samples) // args.batches) * (args.batches - 1) :]
    if args.batches > 1:
        times[f"last batch ({len(last)})"] = []
    for r in range(args.repeats):
        if args.batches > 1:
            t0 = time.perf_counter()
            qc_jsons = {s: inputs / f"{s}.qc.json" for s in last}
            write_sample_reports(store, last, out, qc_jsons=qc_jsons)
            times[f"last batch ({len(last)})"].append(time.perf_counter() - t0)
        times["in-process"].append(run_in_process(store, samples, out, inputs))
        times["batch"].append(run_batch(store, samples, out, inputs))
        if args.jobs:
            times[per_job].append(run_per_job(store, samples, out, inputs, args.jobs))
        print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()))
    sizes = [p.stat().st_size for p in out.glob("P*.html")]
    print(
        f"{len(samples)} sample reports + 1 cohort report; sample report size median "
        f"{statistics.median(sizes) / 1024:.0f} KiB, cohort report "
        f"{(out / 'cohort.html').stat().st_size / 1024:.0f} KiB"
    )
    for name, values in times.items():
        best = min(values)
        n = len(last) if name.startswith("last batch") else len(samples)
        print(
            f"{name:>12}: best {best:.1f} s, spread {min(values):.1f}-{max(values):.1f} s, "
            f"{best / n * 1000:.0f} ms per sample, {best / 60:.2f} x the 60 s target"
        )


if __name__ == "__main__":
    main()
