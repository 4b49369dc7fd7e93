#!/bin/bash
# Stop exactly the daemons tests/cluster/start-slurm.sh STATE_DIR started, by their PID files (last started
# first): first cancel this cluster's jobs (proctrack/linuxproc leaves nothing else behind), then slurmd,
# slurmctld, slurmdbd, mariadbd, munged. A PID is signalled only while it still names the expected program.
#
#   tests/cluster/stop-slurm.sh STATE_DIR
T=${1:?usage: stop-slurm.sh STATE_DIR}
[ -d "$T" ] || exit 0
export SLURM_CONF="$T/etc/slurm.conf"
up() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat")" != Z ]; }  # zombies count as gone
is() { up "$1" && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]; }                 # pid, program name

if [ -s "$T/run/slurmctld.pid" ] && is "$(cat "$T/run/slurmctld.pid")" slurmctld; then
  [ -s "$T/run/slurmd.pid" ] && kill -CONT "$(cat "$T/run/slurmd.pid")" 2>/dev/null  # a stopped slurmd
  squeue -h -o %A | sort -u | xargs -r scancel
  for _ in $(seq 1 100); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.2; done
fi
for entry in slurmd:slurmd slurmctld:slurmctld slurmdbd:slurmdbd mysql/mariadb:mariadbd munge/munged:munged; do
  pidf="$T/run/${entry%%:*}.pid"; comm=${entry##*:}
  [ -s "$pidf" ] || continue
  pid=$(cat "$pidf")
  if is "$pid" "$comm"; then
    kill -CONT "$pid" 2>/dev/null; kill "$pid"
    for _ in $(seq 1 150); do up "$pid" || break; sleep 0.1; done
    if up "$pid"; then echo "stop-slurm: $comm ($pid) still up after 15 s: SIGKILL"; kill -9 "$pid"; fi
    echo "stopped $comm ($pid)"
  fi
  rm -f "$pidf"
done
