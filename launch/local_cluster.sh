#!/usr/bin/env bash
# Runs N processes of vbanana.main on this machine, each with 8/N simulated CPU devices, joined through
# jax.distributed exactly as the hosts of a pod slice are: every process gets the same arguments plus
# --coordinator_address=127.0.0.1:PORT --num_processes=N --process_id=i. Waits for all; if one fails the
# others are stopped and this script fails with its exit status. SIGTERM or SIGINT to this script is passed
# on to every process and waited for (each saves a checkpoint and stops); if this script is killed outright
# (SIGKILL), the kernel kills its processes too (`python -m vbanana.procs`), and so their data workers.
#
#   launch/local_cluster.sh 2 --config=configs/quickstart.py --workdir=/tmp/run
#
# Environment: DEVICES (total simulated devices, default 8), PORT (default: a free one), LOG_DIR (per-process
# logs, default WORKDIR-independent mktemp dir), PYTHON (default python), VBANANA_MAIN (what to run, default
# "-m vbanana.main").
set -euo pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ || "$1" -lt 1 ]]; then
  echo "usage: $0 NUM_PROCESSES [vbanana.main flags...]" >&2
  exit 2
fi
n=$1; shift
devices=${DEVICES:-8}
if (( devices % n != 0 )); then
  echo "$0: $devices devices do not split evenly over $n processes" >&2
  exit 2
fi
per=$((devices / n))
python=${PYTHON:-python}
main=${VBANANA_MAIN:--m vbanana.main}
port=${PORT:-$($python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
log_dir=${LOG_DIR:-$(mktemp -d -t vbanana_cluster.XXXXXX)}
mkdir -p "$log_dir"
echo "local_cluster: $n processes x $per CPU devices, coordinator 127.0.0.1:$port, logs in $log_dir" >&2

pids=()
for ((i = 0; i < n; i++)); do
  # shellcheck disable=SC2086
  XLA_FLAGS="--xla_force_host_platform_device_count=$per ${XLA_EXTRA_FLAGS:-}" JAX_PLATFORMS=cpu \
    $python -m vbanana.procs --parent=$$ -- $python $main "$@" \
    --coordinator_address="127.0.0.1:$port" --num_processes="$n" --process_id="$i" \
    >"$log_dir/process_$i.log" 2>&1 &
  pids+=($!)
done

stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
# Wait for them: they die with this script, so leaving first would cut their checkpoint save short.
trap 'stop_all; wait; exit 143' INT TERM

declare -A index_of=()
for ((i = 0; i < n; i++)); do index_of[${pids[$i]}]=$i; done
status=0
while (( ${#index_of[@]} > 0 )); do
  set +e
  wait -n -p done_pid "${!index_of[@]}"
  rc=$?
  set -e
  i=${index_of[$done_pid]}
  unset "index_of[$done_pid]"
  if (( rc != 0 && status == 0 )); then
    status=$rc
    echo "local_cluster: process $i exited with status $rc; stopping the others" >&2
    tail -n 40 "$log_dir/process_$i.log" >&2 || true
    stop_all
  fi
done
cat "$log_dir/process_0.log"
exit $status
