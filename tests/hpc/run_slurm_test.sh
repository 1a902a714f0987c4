#!/usr/bin/env bash
# The real SLURM test: start a one-node cluster, run a simulated cohort through
# --profile profiles/slurm, check in sacct that the jobs ran on the scheduler, and check that the
# cohort store equals the one from a local run of the same cohort. `make test-hpc` runs it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
py="${COHORTFLOW_PYTHON:-$repo/.venv/bin/python}"
work=$(mktemp -d /tmp/cohortflow-hpc.XXXXXX)
state="$work/slurm"
cleanup() {
    "$repo/tests/hpc/slurm_cluster.sh" stop "$state" || true
}
trap cleanup EXIT

"$py" -m pip install --quiet "snakemake-executor-plugin-slurm>=1.0"
"$repo/tests/hpc/slurm_cluster.sh" start "$state"
export SLURM_CONF="$state/slurm.conf"

echo "[hpc] simulating a 3-sample cohort"
"$py" -m cohortflow.cli simulate --outdir "$work/sim" --samples 3 --seed 11 --depth 20 \
    --genome-length 300000 >/dev/null
cp -r "$work/sim" "$work/local"
cp -r "$work/sim" "$work/cluster"
# the cluster run calls each sample in shards of 100 kb, one SLURM job per shard; its store
# must still equal the local (unsharded) run's
scatter_bp=100000
"$py" - "$work/cluster/config.yaml" "$scatter_bp" <<'PY'
import sys, yaml
path, size = sys.argv[1], int(sys.argv[2])
cfg = yaml.safe_load(open(path))
cfg.setdefault("calling", {})["scatter_size"] = size
yaml.safe_dump(cfg, open(path, "w"))
PY
shards=$("$py" -c "import sys; from cohortflow.scatter import calling_shards; print(len(calling_shards(sys.argv[1], int(sys.argv[2]))))" "$work/cluster/reference/genome.fa" "$scatter_bp")
echo "[hpc] cluster run: calling in $shards shards per sample"

echo "[hpc] local run"
(cd "$work/local" && "$py" -m cohortflow.cli run --configfile config.yaml --cores 2 \
    >"$work/local.log" 2>&1) || { tail -40 "$work/local.log"; exit 1; }

echo "[hpc] SLURM run"
start=$(date +%s)
(cd "$work/cluster" && "$py" -m cohortflow.cli run --configfile config.yaml \
    --profile "$repo/profiles/slurm" >"$work/cluster.log" 2>&1) || { tail -60 "$work/cluster.log"; exit 1; }
echo "[hpc] SLURM run took $(( $(date +%s) - start )) s"

echo "[hpc] checking the jobs in sacct and the store"
"$py" "$repo/tests/hpc/check_slurm_run.py" --sacct-since "$start" \
    --local "$work/local/results/cohort" --cluster "$work/cluster/results/cohort" \
    --samples 3 --shards "$shards"
rm -rf "$work/sim" "$work/local" "$work/cluster"
echo "[hpc] PASSED"
