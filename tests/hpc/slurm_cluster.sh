#!/usr/bin/env bash
# Start or stop a one-node SLURM cluster on this machine, with accounting (slurmdbd + MariaDB)
# so that `sacct` sees finished jobs. Debian packages: slurm-wlm slurmdbd munge mariadb-server.
#
#   tests/hpc/slurm_cluster.sh start STATE_DIR   install if needed, start every daemon, wait
#   tests/hpc/slurm_cluster.sh stop STATE_DIR    stop the daemons started from STATE_DIR
#
# Needs root (daemons and packages). Writes only under STATE_DIR, /etc/munge and /run/munge.
set -euo pipefail

action=${1:?usage: slurm_cluster.sh start|stop STATE_DIR}
state=$(realpath -m "${2:?usage: slurm_cluster.sh start|stop STATE_DIR}")
conf="$state/slurm.conf"
dbdconf="$state/slurmdbd.conf"
export SLURM_CONF="$conf"

log() { echo "[slurm_cluster] $*" >&2; }

stop() {
    for name in slurmd slurmctld slurmdbd mariadb; do
        pidfile="$state/$name.pid"
        if [ -s "$pidfile" ]; then
            pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -9 "$pid" 2>/dev/null || true
            rm -f "$pidfile"
        fi
    done
    if [ -e "$state/linked_etc_conf" ] && [ -L /etc/slurm/slurm.conf ]; then
        rm -f /etc/slurm/slurm.conf "$state/linked_etc_conf"
    fi
    if [ -s "$state/munged.pid" ]; then
        kill "$(cat "$state/munged.pid")" 2>/dev/null || true
        rm -f "$state/munged.pid"
    fi
    log "stopped"
}

install_packages() {
    local missing=()
    for bin in slurmctld slurmd slurmdbd munged mariadbd; do
        command -v "$bin" >/dev/null || missing+=("$bin")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing slurm-wlm slurmdbd munge mariadb-server (missing: ${missing[*]})"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            slurm-wlm slurmdbd munge mariadb-server >/dev/null
    fi
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq 1 $((seconds * 5))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    log "timed out waiting for $what"
    return 1
}

start() {
    [ "$(id -u)" = 0 ] || { log "needs root"; exit 1; }
    install_packages
    mkdir -p "$state"/{spool,slurmd,log,mysql}
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 1024 ))

    # munge: a key, its folders owned by munge, the daemon
    mkdir -p /etc/munge /run/munge /var/log/munge /var/lib/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
    chmod 400 /etc/munge/munge.key
    if ! pgrep -x munged >/dev/null; then
        runuser -u munge -- munged --force --pid-file=/run/munge/munged.pid
        cp /run/munge/munged.pid "$state/munged.pid"
    fi
    wait_for 10 munge munge -n

    # MariaDB for slurmdbd, data under the state folder
    if [ ! -d "$state/mysql/mysql" ]; then
        mariadb-install-db --user=root --datadir="$state/mysql" --auth-root-authentication-method=normal >/dev/null
    fi
    mariadbd --user=root --datadir="$state/mysql" --socket="$state/mysql.sock" \
        --pid-file="$state/mariadb.pid" --skip-networking=0 --bind-address=127.0.0.1 --port=3307 \
        >"$state/log/mariadb.log" 2>&1 &
    wait_for 30 mariadb mariadb --socket="$state/mysql.sock" -uroot -e "select 1"
    mariadb --socket="$state/mysql.sock" -uroot -e \
        "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

    cat >"$dbdconf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3307
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$state/slurmdbd.pid
LogFile=$state/log/slurmdbd.log
EOF
    chmod 600 "$dbdconf"
    slurmdbd  # reads slurmdbd.conf from the folder of $SLURM_CONF
    wait_for 30 slurmdbd bash -c "exec 3<>/dev/tcp/127.0.0.1/6819"

    cat >"$conf" <<EOF
ClusterName=cohortflow
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobCompType=jobcomp/none
AccountingStoreFlags=job_comment
StateSaveLocation=$state/spool
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ReturnToService=2
MinJobAge=600
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    # Job steps (srun inside sbatch jobs) look for the default /etc/slurm/slurm.conf, not
    # $SLURM_CONF: link it to ours unless a real one is there.
    mkdir -p /etc/slurm
    if [ ! -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then
        ln -sfn "$conf" /etc/slurm/slurm.conf
        echo 1 >"$state/linked_etc_conf"
    fi
    # the cluster and an account for root, so that jobs are accounted and sacct finds them
    sacctmgr -i add cluster cohortflow >/dev/null 2>&1 || true
    sacctmgr -i add account cohortflow Cluster=cohortflow >/dev/null 2>&1 || true
    sacctmgr -i add user root Account=cohortflow Cluster=cohortflow >/dev/null 2>&1 || true
    slurmctld -f "$conf"
    slurmd -f "$conf"
    wait_for 60 "node idle" bash -c "sinfo -h -o %T | grep -qE 'idle|mixed'"
    srun -N1 -t 1 true
    log "cluster up: $(sinfo -h -o '%P %D %T %c cpus %m MB')"
}

case "$action" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: slurm_cluster.sh start|stop STATE_DIR" >&2; exit 2 ;;
esac
