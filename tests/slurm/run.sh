#!/usr/bin/env bash
# A one-node Slurm cluster on this machine runs tests/sweeps/small.toml as a
# 4-task job array; the merged result must equal a local run's byte for byte.
#
#   bash tests/slurm/run.sh [VMEMSIM]      (default: target/debug/vmemsim)
#
# Needs root and Debian's slurm-wlm and munge (apt-get install slurm-wlm munge).
# Everything (munge key and socket, slurm.conf, state, logs) lives in a fresh
# temporary directory; the daemons listen on 127.0.0.1 and are stopped at
# the end. Exit 0: pass; 77: skipped (the reason is printed); else: failure.
# docs/sweeps.md describes the set-up.
set -euo pipefail
cd "$(dirname "$0")/../.."
VMEMSIM=$(realpath "${1:-target/debug/vmemsim}")

skip() { echo "slurm test: SKIPPED: $*"; echo "slurm: 0 passed, 0 failed, 1 skipped"; PASSED=1; exit 77; }

[ -x "$VMEMSIM" ] || { echo "slurm test: no vmemsim binary at $VMEMSIM (cargo build first)"; exit 1; }
for tool in munged slurmctld slurmd sbatch sinfo; do
  command -v "$tool" >/dev/null || skip "$tool not found (apt-get install slurm-wlm munge)"
done
[ "$(id -u)" = 0 ] || skip "needs root to start munged, slurmctld and slurmd"

WORK=$(mktemp -d /tmp/vmemsim-slurm.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$WORK"/{munge,state,spool,log}
# Ports away from Slurm's defaults, so a real cluster's daemons are not disturbed.
CTLD_PORT=${VMEMSIM_SLURM_PORT:-16817}
NODE_PORT=$((CTLD_PORT + 1))
HOST=$(hostname -s)
export SLURM_CONF="$WORK/slurm.conf"

stop() {
  for pidfile in "$WORK"/slurmd.pid "$WORK"/slurmctld.pid "$WORK"/munge/munged.pid; do
    if [ -s "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
  done
  # Wait (up to 10 s) for them to exit, then remove the directory unless
  # the test failed (its logs are kept for a look).
  for _ in $(seq 20); do
    pgrep -f "$WORK" >/dev/null || break
    sleep 0.5
  done
  if [ "${PASSED:-0}" = 1 ]; then rm -rf "$WORK"; else echo "slurm test: logs kept in $WORK"; fi
}
show_logs() {
  for f in "$WORK"/log/*; do echo "--- $f"; tail -n 30 "$f"; done
}
trap stop EXIT

# munge: a fresh key and a private socket.
dd if=/dev/urandom of="$WORK/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$WORK/munge/munge.key"
chmod 700 "$WORK/munge"
munged --force --key-file="$WORK/munge/munge.key" --socket="$WORK/munge/munge.socket" \
  --pid-file="$WORK/munge/munged.pid" --log-file="$WORK/log/munged.log" \
  --seed-file="$WORK/munge/munged.seed" \
  || skip "munged did not start: $(tail -n 3 "$WORK/log/munged.log" 2>/dev/null)"

cat > "$SLURM_CONF" <<CONF
ClusterName=vmemsimtest
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$NODE_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$WORK/munge/munge.socket
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF

slurmctld -f "$SLURM_CONF" || { show_logs; skip "slurmctld did not start"; }
slurmd -f "$SLURM_CONF" || { show_logs; skip "slurmd did not start"; }
for _ in $(seq 60); do
  if sinfo -h -N -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; then break; fi
  sleep 1
done
sinfo -h -N -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc)' \
  || { show_logs; skip "the node did not come up: $(sinfo -N 2>&1 | tail -n 1)"; }
echo "slurm test: one-node cluster up ($(sinfo -h -N -o '%N %t %c CPUs'))"

SWEEP=tests/sweeps/small.toml
"$VMEMSIM" sweep "$SWEEP" --out "$WORK/array" --slurm "$WORK/sweep.sbatch" --tasks 4 --time 0:10:00
# --wait returns when every array task has ended, non-zero if one failed.
if ! timeout 900 sbatch --wait "$WORK/sweep.sbatch"; then
  show_logs
  cat "$WORK"/array/slurm-*.out 2>/dev/null || true
  echo "slurm test: FAILED: the job array did not complete"
  exit 1
fi
shards=$(ls "$WORK"/array/runs-*-of-4.jsonl | wc -l)
[ "$shards" = 4 ] || { echo "slurm test: FAILED: $shards shard files, want 4"; exit 1; }

"$VMEMSIM" sweep "$SWEEP" --out "$WORK/local"
"$VMEMSIM" merge "$WORK/array" --csv "$WORK/array.csv" --json "$WORK/array.json" --svg "$WORK/array.svg" > "$WORK/array.txt"
"$VMEMSIM" merge "$WORK/local" --csv "$WORK/local.csv" --json "$WORK/local.json" > "$WORK/local.txt"
for ext in txt csv json; do
  cmp "$WORK/array.$ext" "$WORK/local.$ext" \
    || { echo "slurm test: FAILED: merged $ext of the job array differs from the local run"; exit 1; }
done
runs=$(($(wc -l < "$WORK/array.txt") - 1))
[ "$runs" = 12 ] || { echo "slurm test: FAILED: $runs runs merged, want 12"; exit 1; }
echo "slurm test: PASSED: 4 array tasks, 12 runs merged, table, CSV and JSON identical to the local run"
echo "slurm: 1 passed, 0 failed"
PASSED=1
