#!/usr/bin/env bash
# Starts training on every worker (in the background, logs in ~/vbanana.log on each worker). The workers find
# each other through the TPU metadata (jax.distributed auto-detection), so no coordinator flags are needed.
#   launch/tpu_run.sh --name=vb --zone=us-east5-a --config=configs/pretrain_tpu.py --workdir=gs://bucket/run \
#                     [--config.key=value ...] [--mode=train] [--project=P] [--dry-run]
# The workdir must be on GCS: every host writes its checkpoint shards there.
source "$(dirname "$0")/tpu_common.sh"
parse_common "$@"
config=; workdir=; args=()
for arg in "${rest[@]+"${rest[@]}"}"; do
  case "$arg" in
    --config=*) config=${arg#*=} ;;
    --workdir=*) workdir=${arg#*=} ;;
    *) args+=("$arg") ;;
  esac
done
[[ -n "$config" ]] || { echo "tpu_run.sh: --config=configs/NAME.py[:ARGS] is required" >&2; exit 2; }
[[ "$workdir" == gs://* ]] || { echo "tpu_run.sh: --workdir must be a gs:// path shared by all hosts, got '${workdir}'" >&2; exit 2; }
cmd="cd ~/vbanana && nohup ~/venv/bin/python -m vbanana.main --config=$(printf %q "$config") --workdir=$(printf %q "$workdir")"
for a in "${args[@]+"${args[@]}"}"; do cmd+=" $(printf %q "$a")"; done
cmd+=" > ~/vbanana.log 2>&1 &"
on_workers "$cmd"
