#!/usr/bin/env bash
# The GPU check: the one thing to run when a GPU is lent. From the repository root of a fresh GPU machine:
#
#   bash benchmarks/gpu_check.sh            # install, gpu_mfu.py, a train step of the GPU config, predict, one table
#   bash benchmarks/gpu_check.sh --wheels   # beforehand, on a machine with pip access: the missing packages for a
#                                           # GPU machine that has no registry (Python 3.12, jax preinstalled), in .whl/
#
# Install: nothing when the machine's Python already has jax with a GPU and vbanana's imports; else the wheels in
# .whl/ (--no-deps, into /tmp/vbanana_site: only packages the machine lacks, never jax); else
# `pip install -e ".[gpu]"` (needs the network). Then benchmarks/gpu_check.py runs the checks, each in its own
# process, with the XLA flags the deviceless check compiled them with (python benchmarks/gpu_check.py
# --deviceless, docs/performance.md), and prints one table. The whole run is timed; it is sized for under 8
# minutes on one H200 (an estimate until it has run on one). Where $OUT is set, the output is also written to $OUT/gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# What vbanana.step, vbanana.export and vbanana.predict import, beyond the standard library.
IMPORTS="jax flax optax orbax.checkpoint ml_collections grain array_record einops etils safetensors PIL scipy \
matplotlib tqdm absl yaml"
WHEELS="ml-collections==1.1.0 grain==0.2.18 array-record==0.8.6 portpicker==1.6.0"

if [[ "${1:-}" == "--wheels" ]]; then
  # The GPU machine's Python is 3.12 on x86-64; pure-Python and manylinux wheels, no dependencies resolved.
  mkdir -p .whl
  $PY -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $WHEELS || exit 1
  ls -l .whl
  exit 0
fi

log=/dev/null
if [[ -n "${OUT:-}" ]]; then log="$OUT/gpu_check.log"; fi
exec > >(tee "$log") 2>&1
start=$(date +%s)
export PYTHONUNBUFFERED=1
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_triton_gemm=false"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

missing() {  # prints the modules of $IMPORTS that do not import
  $PY - $IMPORTS <<'EOF'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m.split(".")[0]) is None))
EOF
}

echo "== install"
need=$(missing)
if [[ -n "$need" ]]; then
  echo "missing: $need"
  if compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/vbanana_site \
        .whl/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/vbanana_site"
  else
    $PY -m pip install -q -e ".[gpu]" || { echo "gpu_check: cannot install (no .whl/, no registry)"; exit 1; }
  fi
  need=$(missing)
  if [[ -n "$need" ]]; then echo "gpu_check: still missing after the install: $need"; exit 1; fi
fi
$PY - <<'EOF' || exit 1
import importlib.metadata as md, jax
versions = ", ".join(f"{p} {md.version(p)}" for p in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain"))
print(f"python {__import__('sys').version.split()[0]}: {versions}; devices {jax.devices()}")
if jax.devices()[0].platform != "gpu":
  raise SystemExit("gpu_check: jax sees no GPU here; run it on a GPU machine (or see --deviceless in gpu_check.py)")
EOF
echo "install and import: $(( $(date +%s) - start )) s"

echo "== checks"
$PY benchmarks/gpu_check.py --out=/tmp/vbanana_gpu_check
status=$?
echo "gpu_check.sh: $(( $(date +%s) - start )) s end to end (exit $status)"
exit $status
