#!/usr/bin/env bash
# A single-node SLURM (slurmctld + slurmd + munged) on this machine, from Debian's packages
# (apt-get install slurm-wlm munge), entirely under one folder: for tests and trying
# hydra/launcher=slurm without a cluster. Needs root (slurmd starts jobs as their users).
#   scripts/slurm_localhost.sh start DIR   # writes DIR/slurm.conf; then export SLURM_CONF=DIR/slurm.conf
#   scripts/slurm_localhost.sh stop DIR
set -euo pipefail
cmd=${1:?start|stop}; dir=$(realpath -m "${2:?folder}")
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
case "$cmd" in
start)
  mkdir -p "$dir"/{state,spool,log,munge}
  chown munge:munge "$dir/munge"; chmod 755 "$dir" "$dir/munge"
  # munge: its own socket in DIR so a system munged (if any) is untouched
  runuser -u munge -- munged --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/seed" --key-file=/etc/munge/munge.key
  node=$(hostname -s)
  hw=$(slurmd -C | head -1 | sed 's/^NodeName=[^ ]* //')
  cat > "$dir/slurm.conf" <<CONF
ClusterName=seqbench
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$(port)
SlurmdPort=$(port)
SlurmUser=root
AuthType=auth/munge
# cred_expire: also how long a requeued job waits before it starts again (default 120 s)
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=15
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
NodeName=$node NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld -i
  slurmd
  for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      echo "SLURM up: export SLURM_CONF=$dir/slurm.conf"; exit 0; fi
    sleep 1
  done
  echo "SLURM did not come up; logs in $dir/log" >&2; sinfo -R >&2 || true; exit 1 ;;
stop)
  # End the jobs first, while slurmd can still tear their steps down (else slurmstepd lingers).
  if [ -f "$dir/slurm.conf" ]; then
    export SLURM_CONF="$dir/slurm.conf"
    scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 30); do
      [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 1
    done
  fi
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
