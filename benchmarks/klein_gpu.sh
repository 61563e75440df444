#!/usr/bin/env bash
# Issue 22, item 6: the klein-4B full fine-tuning step on one H200, vbanana (JAX) against diffusers (PyTorch).
# From the repository root of a fresh GPU machine (one prepared run; sized for about 6 minutes, an estimate):
#
#   bash benchmarks/klein_gpu.sh             # install what is missing, then benchmarks/klein_gpu.py (one table)
#   bash benchmarks/klein_gpu.sh --wheels    # beforehand, on a machine with pip access: the missing packages in .whl/
#
# Install as benchmarks/gpu_check.sh does: nothing when the machine's Python imports everything; else the wheels in
# .whl/ (--no-deps, into /tmp/vbanana_site; never jax or torch). Output also goes to $OUT/klein_gpu.log when set.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
IMPORTS="jax flax optax orbax.checkpoint ml_collections grain array_record einops etils safetensors PIL scipy \
matplotlib tqdm absl yaml tokenizers torch diffusers"
WHEELS="ml-collections==1.1.0 grain==0.2.18 array-record==0.8.6 portpicker==1.6.0 diffusers==0.42.1 \
importlib-metadata==8.7.0"

if [[ "${1:-}" == "--wheels" ]]; then
  mkdir -p .whl
  $PY -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $WHEELS || exit 1
  ls -l .whl
  exit 0
fi

log=/dev/null
if [[ -n "${OUT:-}" ]]; then log="$OUT/klein_gpu.log"; fi
exec > >(tee "$log") 2>&1
start=$(date +%s)
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
missing() {
  $PY - $IMPORTS <<'PYEOF'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m.split(".")[0]) is None))
PYEOF
}
need=$(missing)
if [[ -n "$need" ]]; then
  echo "missing: $need"
  compgen -G ".whl/*.whl" > /dev/null || { echo "klein_gpu: no .whl/ (run --wheels beforehand)"; exit 1; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/vbanana_site \
      .whl/*.whl || exit 1
  export PYTHONPATH="$PYTHONPATH:/tmp/vbanana_site"
  need=$(missing)
  if [[ -n "$need" ]]; then echo "klein_gpu: still missing after the install: $need"; exit 1; fi
fi
echo "install: $(( $(date +%s) - start )) s"
$PY benchmarks/klein_gpu.py "$@"
status=$?
echo "klein_gpu.sh: $(( $(date +%s) - start )) s end to end (exit $status)"
exit $status
