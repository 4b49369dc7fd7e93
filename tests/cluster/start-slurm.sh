#!/bin/bash
# A private single-node Slurm 22.05 (munged, MariaDB + slurmdbd for sacct, slurmctld, slurmd) for the cluster
# tests, installed from Debian's packages when missing. Everything lives in STATE_DIR: configs, munge key,
# sockets, free TCP ports picked at start, database, logs and PID files (read by stop-slurm.sh). Nothing is
# written to /etc, no shared socket or port is used, so other Slurm clusters (or other test runs) on the
# same machine are unaffected. Clients find this cluster through `SLURM_CONF`, written to STATE_DIR/env.
#
#   tests/cluster/start-slurm.sh STATE_DIR && . STATE_DIR/env && sinfo
#
# Short timeouts keep the fault tests quick: SlurmdTimeout 10 s (a stopped slurmd marks the node down and
# requeues its jobs), cred_expire 20 s (how long a requeued job waits), scheduling every 5 s. There is no
# DefMemPerCPU, as on clusters where a job without --mem reserves the whole node's memory.
set -euo pipefail
T=${1:?usage: start-slurm.sh STATE_DIR}
T=$(mkdir -p "$T" && cd "$T" && pwd)
chmod 755 "$T"  # munged and mariadbd run as their own users and must reach their directories
H=$(hostname -s)
wait_for() {  # a shell condition, up to 30 s
  local end=$((SECONDS + 30))
  while [ $SECONDS -lt $end ]; do timeout 5 bash -c "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "start-slurm: timed out waiting for: $1 (logs in $T/log)" >&2; exit 1
}
spawn() {  # name command...: start a daemon in the background, its output in the log directory
  "${@:2}" < /dev/null > "$T/log/$1.out" 2>&1 &
}

install_slurm() {
  local need=0
  for b in slurmctld slurmd slurmdbd munged mariadbd; do command -v "$b" >/dev/null || need=1; done
  [ "$need" = 0 ] && return
  apt-get -o DPkg::Lock::Timeout=120 update -q
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 install -y -q --no-install-recommends \
    slurm-wlm slurmdbd munge mariadb-server
}

free_ports() {  # three TCP ports nobody listens on now (slurmctld, slurmd, slurmdbd)
  python3 -c 'import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))'
}

write_configs() {
  local cpus mem ctld_port slurmd_port dbd_port
  cpus=$(nproc); mem=$(( $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) * 85 / 100 ))
  read -r ctld_port slurmd_port dbd_port < <(free_ports)
  cat > "$T/etc/slurm.conf" <<EOF
ClusterName=gentool
SlurmctldHost=$H(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$T/run/munge/munge.socket,cred_expire=20
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$dbd_port
AccountingStoragePass=$T/run/munge/munge.socket
JobCompType=jobcomp/filetxt
JobCompLoc=$T/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
ReturnToService=2
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/run/slurmctld.pid
SlurmdPidFile=$T/run/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=10
KillWait=5
MinJobAge=300
NodeName=$H NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
EOF
  cat > "$T/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$T/run/munge/munge.socket
DbdHost=localhost
DbdPort=$dbd_port
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$T/run/slurmdbd.pid
LogFile=$T/log/slurmdbd.log
EOF
  chmod 600 "$T/etc/slurmdbd.conf"  # slurmdbd demands it
  echo "export SLURM_CONF=$T/etc/slurm.conf" > "$T/env"
}

start_munged() {
  install -d -o munge -g munge -m 755 "$T/run/munge"  # munged insists that clients can reach its socket
  install -d -o munge -g munge -m 700 "$T/munge"
  mungekey --create --keyfile="$T/munge/munge.key"
  chown munge:munge "$T/munge/munge.key"; chmod 600 "$T/munge/munge.key"
  runuser -u munge -- /usr/sbin/munged --socket="$T/run/munge/munge.socket" --key-file="$T/munge/munge.key" \
    --pid-file="$T/run/munge/munged.pid" --log-file="$T/munge/munged.log" --seed-file="$T/munge/munged.seed"
  wait_for "munge --socket=$T/run/munge/munge.socket -n | unmunge --socket=$T/run/munge/munge.socket"
}

start_mariadb() {
  install -d -o mysql -g mysql "$T/db" "$T/run/mysql"
  mariadb-install-db --no-defaults --user=mysql --datadir="$T/db" --auth-root-authentication-method=socket \
    > "$T/log/mariadb-install.log"
  spawn mariadbd setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$T/db" \
    --socket="$T/run/mysql/mysqld.sock" --pid-file="$T/run/mysql/mariadb.pid" --skip-networking \
    --innodb-buffer-pool-size=64M --log-error="$T/log/mariadb.log"
  wait_for "mariadb --no-defaults --socket=$T/run/mysql/mysqld.sock -e 'select 1'"
}

start_slurm_daemons() {
  export SLURM_CONF="$T/etc/slurm.conf"
  MYSQL_UNIX_PORT="$T/run/mysql/mysqld.sock" /usr/sbin/slurmdbd
  wait_for "sacctmgr -n list cluster"
  /usr/sbin/slurmctld
  wait_for "scontrol ping | grep -q UP"
  /usr/sbin/slurmd
  wait_for "[ \"\$(sinfo -h -n $H -o %T)\" = idle ]"
}

install_slurm
mkdir -p "$T"/{etc,log,state,spool,run}
write_configs
start_munged
start_mariadb
start_slurm_daemons
sinfo
