#!/usr/bin/env bash
# Follows the training log of one worker (default 0; --worker=N for another).
#   launch/tpu_logs.sh --name=vb --zone=us-east5-a [--worker=N] [--project=P] [--dry-run]
source "$(dirname "$0")/tpu_common.sh"
parse_common "$@"
WORKER=0
for arg in "${rest[@]+"${rest[@]}"}"; do
  case "$arg" in
    --worker=*) WORKER=${arg#*=} ;;
    *) echo "tpu_logs.sh: unknown flag $arg (flags: $usage_common --worker=N)" >&2; exit 2 ;;
  esac
done
on_workers "tail -n 200 -F ~/vbanana.log"
