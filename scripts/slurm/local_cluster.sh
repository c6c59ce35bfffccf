#!/usr/bin/env bash
# A real one-node SLURM on this machine, for the tests marked `slurm` (tests/cluster/test_slurm.py).
#
#   bash scripts/slurm/local_cluster.sh start    # install (Debian packages) and start; prints the partition
#   bash scripts/slurm/local_cluster.sh status   # sinfo, or why it is not up
#   bash scripts/slurm/local_cluster.sh stop
#
# What runs: munged (authentication), mariadb + slurmdbd (accounting: `sacct` is how submitit follows its
# jobs), slurmctld and slurmd, as local daemons, with one node (this host, all its CPUs) in one partition
# `debug`. Cgroups are off (proctrack/linuxproc, task/none), so it runs in a container without systemd. It needs
# root and Debian's packages (slurm-wlm, slurmdbd, munge, mariadb-server); where either is missing it says so and
# exits 1, and the slurm tests skip with that reason. The node is what `slurmd -C` reports of this machine. Everything lives under $SLURM_LOCAL_DIR (default
# /tmp/terramind-ft-slurm): configs, state, logs.
set -euo pipefail

DIR="${SLURM_LOCAL_DIR:-/tmp/terramind-ft-slurm}"
CONF_DIR=/etc/slurm
HOST="$(hostname -s)"

say() { echo "local_cluster: $*" >&2; }
running() { pgrep -x -r R,S,D "$1" >/dev/null; }  # a zombie of an earlier daemon does not count

install_packages() {
    local missing=()
    for cmd in slurmctld slurmd slurmdbd munged mariadbd; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        say "missing ${missing[*]} and cannot install them (needs root and apt-get)"
        return 1
    fi
    say "installing slurm-wlm slurmdbd munge mariadb-server"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm slurmdbd munge mariadb-server >"$DIR/apt.log" 2>&1 ||
        { apt-get update -q >>"$DIR/apt.log" 2>&1 &&
          DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm slurmdbd munge mariadb-server \
              >>"$DIR/apt.log" 2>&1; } || { say "apt-get failed, see $DIR/apt.log"; return 1; }
}

write_configs() {
    mkdir -p "$CONF_DIR" "$DIR/state" "$DIR/spool" "$DIR/log"
    cat >"$CONF_DIR/slurm.conf" <<EOF
ClusterName=terramindci
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MpiDefault=none
ReturnToService=2
SlurmdTimeout=30
KillWait=5
MinJobAge=30
$(slurmd -C | head -1) NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$CONF_DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$DIR/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$CONF_DIR/slurmdbd.conf"
}

wait_for() {  # wait_for SECONDS what command...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq "$((seconds * 2))"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    say "$what did not come up (logs in $DIR/log)"
    return 1
}

start() {
    mkdir -p "$DIR"
    install_packages
    write_configs
    if ! running munged; then
        [ -s /etc/munge/munge.key ] || { mkdir -p /etc/munge; dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 \
            count=1 2>/dev/null; }
        chown -R munge:munge /etc/munge 2>/dev/null || true
        chmod 400 /etc/munge/munge.key
        mkdir -p /run/munge /var/lib/munge /var/log/munge && chown munge:munge /run/munge /var/lib/munge \
            /var/log/munge 2>/dev/null || true
        if id munge >/dev/null 2>&1; then su -s /bin/sh munge -c munged; else munged --force; fi
    fi
    wait_for 10 munged munge -n
    if ! running mariadbd; then
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
        (mariadbd-safe --user=mysql >"$DIR/log/mariadb.log" 2>&1 &)
    fi
    wait_for 30 mariadb mariadb -u root -e "select 1"
    running slurmdbd || slurmdbd
    wait_for 30 slurmdbd sacctmgr -i list cluster
    sacctmgr -i add cluster terramindci >/dev/null 2>&1 || true
    running slurmctld || slurmctld
    wait_for 30 slurmctld scontrol ping
    running slurmd || slurmd
    wait_for 30 "the node" sh -c "sinfo -h -o %T | grep -qE 'idle|mix|alloc'"
    scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
    sinfo
}

stop() {
    for daemon in slurmd slurmctld slurmdbd; do pkill -x "$daemon" 2>/dev/null || true; done
    mariadb-admin -u root shutdown 2>/dev/null || true
    pkill -x munged 2>/dev/null || true
}

status() {
    if scontrol ping >/dev/null 2>&1 && sinfo -h -o %T | grep -qE 'idle|mix|alloc'; then
        sinfo
        return 0
    fi
    say "not running (bash scripts/slurm/local_cluster.sh start)"
    return 1
}

case "${1:-status}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
