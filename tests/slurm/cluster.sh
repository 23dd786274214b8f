#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests/test_workflow_slurm.py (docs/hpc.md).
#
#   tests/slurm/cluster.sh start    # as root on Debian/Ubuntu: installs and starts it
#   tests/slurm/cluster.sh status
#   tests/slurm/cluster.sh stop
#
# It runs the real daemons from the distribution's packages: munged, MariaDB, slurmdbd (accounting,
# so that sacct, sacctmgr and the executor plugin's account check work as on a site), slurmctld and
# slurmd.  The node is shaped like a small GPU node so that the unchanged profile in
# examples/workflow/profiles/slurm can be scheduled: 16 CPUs, 64,000 MB and two GPUs declared as
# generic resources (gres/gpu, counted by SLURM's accounting) with no device behind them.  varfx then
# runs on the CPU (--device auto).  Partitions `cpu` (default) and `gpu`, and the account
# `my_account` holding the calling user, are the ones the profile names.
#
# It writes /etc/slurm/{slurm,gres,slurmdbd}.conf, and refuses to touch such files that it did not
# write.  State and logs go to $VARFX_SLURM_DIR (default /tmp/varfx-slurm).
set -euo pipefail

DIR=${VARFX_SLURM_DIR:-/tmp/varfx-slurm}
ETC=/etc/slurm
MARK="# written by varfx tests/slurm/cluster.sh"
HOST=$(hostname -s)
ACCOUNT=my_account
DB_PASS=varfx-test

die() { echo "cluster.sh: $*" >&2; exit 3; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local n=$1 what=$2; shift 2
    for _ in $(seq "$n"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    die "$what did not come up within ${n}s (logs: $DIR/log)"
}

install() {
    local missing=()
    for cmd in slurmctld:slurm-wlm slurmdbd:slurmdbd mariadbd:mariadb-server munged:munge; do
        command -v "${cmd%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${cmd%%:*}" ] || missing+=("${cmd#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "needs apt-get to install ${missing[*]} (Debian or Ubuntu)"
    echo "installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >"$DIR/log/apt.log" 2>&1 \
        || { DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$DIR/log/apt.log" 2>&1 &&
             DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>"$DIR/log/apt.log" 2>&1; } \
        || die "apt-get install ${missing[*]} failed (see $DIR/log/apt.log)"
}

write_conf() {  # write_conf NAME < content
    local f=$ETC/$1
    if [ -e "$f" ] && ! grep -qF "$MARK" "$f"; then
        die "$f exists and was not written by this script: not touching a real cluster's configuration"
    fi
    { echo "$MARK"; cat; } >"$f"
}

configure() {
    mkdir -p "$ETC" "$DIR"/{state,spool,log}
    write_conf slurm.conf <<EOF
ClusterName=varfx
SlurmctldHost=$HOST
AuthType=auth/munge
# a requeued job may start again after 15 s (SLURM's default: 120)
AuthInfo=cred_expire=15
SlurmUser=root
SlurmdUser=root
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# slurmd takes the node's size from here rather than from the hardware (the profile asks for 8 CPUs
# and 32,000 MB per shard; the GPUs are declared, not detected)
SlurmdParameters=config_overrides
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
# finished jobs stay visible to squeue for 10 minutes
MinJobAge=600
# a job past its time limit gets SIGTERM, then SIGKILL 5 s later (SLURM's default: 30)
KillWait=5
ReturnToService=2
GresTypes=gpu
NodeName=$HOST CPUs=16 RealMemory=64000 Gres=gpu:2 State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP
EOF
    write_conf gres.conf <<EOF
AutoDetect=off
NodeName=$HOST Name=gpu File=/dev/null
NodeName=$HOST Name=gpu File=/dev/zero
EOF
    write_conf slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$ETC/slurmdbd.conf"
}

start() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts system daemons)"
    mkdir -p "$DIR/log"
    install
    configure
    # munge: the package creates /etc/munge/munge.key
    if ! pgrep -x munged >/dev/null; then
        mkdir -p /run/munge && chown munge:munge /run/munge
        [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=128 2>/dev/null &&
                                          chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key; }
        su -s /bin/sh munge -c /usr/sbin/munged || die "munged did not start"
    fi
    wait_for 20 munge sh -c 'munge -n | unmunge'
    # MariaDB
    if ! pgrep -x mariadbd >/dev/null && ! pgrep -x mysqld >/dev/null; then
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        (setsid mysqld_safe --user=mysql >"$DIR/log/mysql.log" 2>&1 &)
    fi
    wait_for 60 MariaDB mysql -u root -e "select 1"
    mysql -u root -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
                      ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
                      CREATE DATABASE IF NOT EXISTS slurm_acct_db;
                      GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
    pgrep -x slurmdbd >/dev/null || slurmdbd
    wait_for 60 slurmdbd sacctmgr -n list cluster
    local user=${SUDO_USER:-$(id -un)}
    sacctmgr -n list cluster format=cluster | grep -qw varfx || sacctmgr -i add cluster varfx >/dev/null
    sacctmgr -n list account format=account | grep -qw "$ACCOUNT" || sacctmgr -i add account "$ACCOUNT" >/dev/null
    sacctmgr -n -s list user "$user" format=account | grep -qw "$ACCOUNT" \
        || sacctmgr -i add user "$user" account="$ACCOUNT" >/dev/null
    if pgrep -x slurmctld >/dev/null; then scontrol reconfigure; else slurmctld; fi
    wait_for 30 slurmctld scontrol ping
    pgrep -x slurmd >/dev/null || slurmd
    wait_for 60 "node $HOST" sh -c "sinfo -h -n $HOST -o %T | grep -qE '^(idle|mixed|allocated)'"
    status
}

status() {
    sinfo -N -o "%N %P %c %m %G %T"
    sacctmgr -n -s list user "${SUDO_USER:-$(id -un)}" format=user,account,cluster
}

stop() {
    scontrol shutdown >/dev/null 2>&1 || true
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmdbd 2>/dev/null || true
    mysqladmin -u root shutdown >/dev/null 2>&1 || true
    sleep 2
    echo "stopped (configuration left in $ETC, state in $DIR)" >&2
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|status|stop" >&2; exit 2 ;;
esac
