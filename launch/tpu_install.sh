#!/usr/bin/env bash
# Copies this checkout to every worker of the slice and installs it with JAX for TPU in ~/venv.
#   launch/tpu_install.sh --name=vb --zone=us-east5-a [--project=P] [--dry-run]
source "$(dirname "$0")/tpu_common.sh"
parse_common "$@"
[[ ${#rest[@]} -eq 0 ]] || { echo "tpu_install.sh: unknown flag ${rest[0]} (flags: $usage_common)" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
tarball=${TMPDIR:-/tmp}/vbanana_src.tar.gz
run tar -czf "$tarball" -C "$root" --exclude=.venv --exclude=runs --exclude=.git --exclude=__pycache__ .
run gcloud compute tpus tpu-vm scp "$tarball" "$name":vbanana_src.tar.gz --zone="$zone" "${project_flag[@]}" --worker=all
on_workers "rm -rf ~/vbanana && mkdir -p ~/vbanana && tar -xzf ~/vbanana_src.tar.gz -C ~/vbanana && python3 -m venv ~/venv && ~/venv/bin/pip install -q -U pip && ~/venv/bin/pip install -q -e ~/vbanana 'jax[tpu]'"
