#!/usr/bin/env bash
# Deletes the slice and its queued resource (the gs:// workdir is kept).
#   launch/tpu_delete.sh --name=vb --zone=us-east5-a [--project=P] [--dry-run]
source "$(dirname "$0")/tpu_common.sh"
parse_common "$@"
[[ ${#rest[@]} -eq 0 ]] || { echo "tpu_delete.sh: unknown flag ${rest[0]} (flags: $usage_common)" >&2; exit 2; }
run gcloud compute tpus queued-resources delete "$name" --zone="$zone" "${project_flag[@]}" --force --quiet
