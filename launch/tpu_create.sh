#!/usr/bin/env bash
# Creates a Cloud TPU VM slice through a queued resource (waits in the queue until capacity frees).
#   launch/tpu_create.sh --name=vb --zone=us-east5-a --accelerator=v5p-32 [--spot | --best-effort]
#                        [--runtime=VERSION] [--project=P] [--dry-run]
# The runtime defaults to the one for the accelerator generation (v5p, v6e, v5litepod, v4).
source "$(dirname "$0")/tpu_common.sh"
accelerator=v5p-8
runtime=
tier=()
parse_common "$@"
for arg in "${rest[@]+"${rest[@]}"}"; do
  case "$arg" in
    --accelerator=*) accelerator=${arg#*=} ;;
    --runtime=*) runtime=${arg#*=} ;;
    --spot) tier=(--spot) ;;
    --best-effort) tier=(--best-effort) ;;
    *) echo "tpu_create.sh: unknown flag $arg (flags: $usage_common --accelerator= --runtime= --spot --best-effort)" >&2; exit 2 ;;
  esac
done
if [[ -z "$runtime" ]]; then
  case "$accelerator" in
    v6e-*) runtime=v2-alpha-tpuv6e ;;
    v5p-*) runtime=v2-alpha-tpuv5 ;;
    v5litepod-*) runtime=v2-alpha-tpuv5-lite ;;
    v4-*) runtime=tpu-ubuntu2204-base ;;
    *) echo "tpu_create.sh: no default runtime for --accelerator=$accelerator; pass --runtime=" >&2; exit 2 ;;
  esac
fi
gcloud_cmd=(gcloud)
# Best-effort capacity is an alpha feature of queued resources.
[[ "${tier[*]-}" == "--best-effort" ]] && gcloud_cmd=(gcloud alpha)
run "${gcloud_cmd[@]}" compute tpus queued-resources create "$name" --node-id="$name" --zone="$zone" \
  "${project_flag[@]}" --accelerator-type="$accelerator" --runtime-version="$runtime" "${tier[@]}"
run gcloud compute tpus queued-resources describe "$name" --zone="$zone" "${project_flag[@]}" \
  --format="value(state.state)"
