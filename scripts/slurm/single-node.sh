#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for tests of `run --launcher slurm`
# (CI runs it; see docs/scaling.md). Needs Debian's `slurm-wlm` and `munge`; run as root.
#
#   bash scripts/slurm/single-node.sh start   # configure, start munged, slurmctld, slurmd
#   bash scripts/slurm/single-node.sh stop
#
# One node (this host under the name `localhost`) with every core, one partition `debug`,
# jobs tracked as plain processes (no cgroups: containers and CI machines rarely delegate
# them), state under /var/spool. An existing /etc/slurm/slurm.conf that this script did not
# write is left alone and the script stops.
set -euo pipefail
CONF=/etc/slurm/slurm.conf
MARK="# written by autoneural scripts/slurm/single-node.sh"

stop() {
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  pkill -x munged 2>/dev/null || true
}

start() {
  if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    echo "$CONF exists and was not written by this script: leaving it (and this machine's Slurm) alone" >&2
    exit 1
  fi
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
  cat > "$CONF" <<CONF
$MARK
ClusterName=autoneural
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# A requeued task restarts at once (the test scancels and requeues).
MinJobAge=30
KillWait=5
NodeName=localhost NodeHostname=$(hostname -s) CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
  # munge's key comes with the package; its daemon runs as root here (no munge user in
  # some images).
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  fi
  chown -R root:root /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
  chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key
  stop
  munged --force
  slurmctld
  slurmd -N localhost
  # Ready when the node answers idle.
  for _ in $(seq 60); do
    if sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      sinfo
      return 0
    fi
    sleep 1
  done
  echo "Slurm did not come up; its logs:" >&2
  tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
  exit 1
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
