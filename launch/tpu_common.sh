# Shared flag parsing for the Cloud TPU VM scripts (sourced, not run).
#   --name=NAME  --zone=ZONE  --project=PROJECT  --dry-run  (also from TPU_NAME, TPU_ZONE, TPU_PROJECT)
# Each script prints every gcloud command it runs; with --dry-run it only prints them.
set -euo pipefail

name=${TPU_NAME:-vbanana}
zone=${TPU_ZONE:-}
project=${TPU_PROJECT:-}
dry_run=0
rest=()

usage_common="--name=NAME --zone=ZONE [--project=PROJECT] [--dry-run]"

parse_common() {
  for arg in "$@"; do
    case "$arg" in
      --name=*) name=${arg#*=} ;;
      --zone=*) zone=${arg#*=} ;;
      --project=*) project=${arg#*=} ;;
      --dry-run) dry_run=1 ;;
      *) rest+=("$arg") ;;
    esac
  done
  if [[ -z "$zone" ]]; then
    echo "$(basename "$0"): --zone is required (or set TPU_ZONE)" >&2
    exit 2
  fi
  project_flag=()
  [[ -n "$project" ]] && project_flag=(--project="$project")
  return 0
}

# Prints a command (shell-quoted, one line), then runs it unless --dry-run.
run() {
  printf '+'; printf ' %q' "$@"; printf '\n'
  if (( dry_run == 0 )); then "$@"; fi
}

# Runs a shell command on every worker of the TPU VM (or one: WORKER=0).
on_workers() {
  run gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" "${project_flag[@]}" \
    --worker="${WORKER:-all}" --command="$1"
}
