#!/usr/bin/env bash
# The GPU path in one command. On a CUDA machine: the gpu-marked tests, the main command with trainer=gpu, a
# bf16-mixed run, scripts/bench.py --tiny and scripts/bench_vectorized.py on the GPU, each under its own time
# limit (9 minutes at most in all), then one summary.md: pass/fail and time per part, the bench tables, the
# device and the versions; each part's log beside it. Elsewhere: one line, "no CUDA GPU: nothing to check", exit 0.
#
#   scripts/gpu_check.sh                  # writes outputs/gpu_check/<date-time>/ (or $OUT, where that is set)
#   PYTHON=/opt/venv/bin/python scripts/gpu_check.sh
#
# Python: $PYTHON, else .venv/bin/python where there is one, else python3; trainstudy is taken from src/.
# A GPU machine that has torch and lightning but not hydra-core, omegaconf, mlxtend or the Hydra launchers, and
# cannot reach an index: on a machine with the project's venv, run scripts/gpu_wheels.sh (add --fashion-mnist
# for the benches' real data), bring .whl/ along, and this script installs those wheels into a scratch folder
# (python -m pip install --no-index --no-deps --target ...) before anything else. Without Fashion-MNIST
# (.whl/FashionMNIST/raw, $TRAINSTUDY_DATA_DIR/FashionMNIST/raw or Debian's /usr/share/datasets/fashion-mnist)
# bench.py is skipped and bench_vectorized.py runs its --tiny digits case.
# Exit status: 0 when every part that ran passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
root=$PWD

if [[ -n "${PYTHON:-}" ]]; then py=$PYTHON
elif [[ -x .venv/bin/python ]]; then py=$root/.venv/bin/python
else py=python3
fi
if ! "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' >/dev/null 2>&1; then
  echo "no CUDA GPU: nothing to check"
  exit 0
fi

out=${OUT:-outputs/gpu_check/$(date +%Y-%m-%d_%H-%M-%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d -t trainstudy-gpu-check-XXXXXX)
trap 'rm -rf "$work"' EXIT
export PYTHONPATH="$root/src:$work/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
rows=()
failures=()

part() {  # NAME LIMIT_S COMMAND...: run it under a time limit; its log goes to $out/NAME.log
  local name=$1 limit=$2 rc=0 start=$SECONDS result shown
  shift 2
  shown="$*"
  shown=${shown//$work/<scratch>}
  shown=${shown/#"$py"/python}
  shown=${shown/ .whl\/*/ .whl/*.whl}
  echo "$name: $shown (limit ${limit} s)"
  timeout --kill-after=10 "$limit" "$@" >"$work/$name.stdout" 2>"$work/$name.stderr" || rc=$?
  { cat "$work/$name.stdout"; echo "--- stderr ---"; cat "$work/$name.stderr"; } >"$out/$name.log"
  case $rc in
    0) result=pass ;;
    124|137) result="FAIL (over its ${limit} s)" ;;
    *) result="FAIL (exit $rc)" ;;
  esac
  # on a GPU machine a skipped gpu test is one that did not check what it is for
  if [[ $rc == 0 && $name == gpu_tests ]] && grep -qE '[0-9]+ skipped' "$work/$name.stdout"; then
    result="FAIL (tests skipped: see the log)"
  fi
  [[ $result == pass ]] || failures+=("$name")
  echo "  -> $result, $((SECONDS - start)) s"
  rows+=("| $name | $result | $((SECONDS - start)) s | \`$shown\` |")
}

skip() {  # NAME REASON
  echo "$1: skipped, $2"
  rows+=("| $1 | skipped: $2 | | |")
}

if compgen -G ".whl/*.whl" >/dev/null; then
  part wheels 30 "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$work/site" .whl/*.whl
fi

# Fashion-MNIST for the benches, reached through a scratch data_dir so that their caches land there too.
fashion_files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
fashion=""
for src in .whl/FashionMNIST/raw "${TRAINSTUDY_DATA_DIR:-data}/FashionMNIST/raw" /usr/share/datasets/fashion-mnist; do
  found=1
  for f in "${fashion_files[@]}"; do [[ -f $src/$f.gz || -f $src/$f ]] || found=0; done
  if [[ $found == 1 ]]; then fashion=$(cd "$src" && pwd); break; fi
done
mkdir -p "$work/data/FashionMNIST"
[[ -n $fashion ]] && ln -s "$fashion" "$work/data/FashionMNIST/raw"

# The parts, in the order a failure is easiest to read; the limits add up to 540 s (the wheels included),
# so with start-up and the summary the whole check ends within 10 minutes.
part gpu_tests 150 "$py" -m pytest -q -rs -m gpu -p no:cacheprovider tests
main=(train.py init=kaiming_normal loss=ce data=mnist data.source=bundled trainer=gpu "data_dir=$work/data")
part train_gpu 60 "$py" "${main[@]}" "hydra.run.dir=$work/runs/train_gpu"
part train_bf16 60 "$py" "${main[@]}" trainer.precision=bf16-mixed "hydra.run.dir=$work/runs/train_bf16"
if [[ -n $fashion ]]; then
  part bench_tiny 90 "$py" scripts/bench.py --tiny --device cuda --data-dir "$work/data"
  part bench_vectorized 150 "$py" scripts/bench_vectorized.py --device cuda --members 16 --rounds 1 \
    --data-dir "$work/data"
else
  skip bench_tiny "no Fashion-MNIST (scripts/gpu_wheels.sh --fashion-mnist brings it)"
  part bench_vectorized 150 "$py" scripts/bench_vectorized.py --tiny --device cuda --data-dir "$work/data"
fi

{
  echo "# GPU check, $(date '+%Y-%m-%d %H:%M:%S')"
  echo
  "$py" - <<'PY' 2>&1
import platform

import torch

try:
    props = torch.cuda.get_device_properties(0)
    print(f"- device: {props.name} (compute capability {props.major}.{props.minor}, "
          f"{props.total_memory / 2**30:.0f} GiB)")
except RuntimeError as e:
    print(f"- device: none that torch can use ({str(e).splitlines()[0]})")
versions = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
for name in ("lightning", "hydra", "omegaconf", "torchvision", "numpy"):
    try:
        versions[name] = __import__(name).__version__
    except ImportError:
        versions[name] = "missing"
print("- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
PY
  echo "- command: scripts/gpu_check.sh; logs: one per part beside this file"
  echo
  echo "| part | result | time | command |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  for name in bench_tiny bench_vectorized; do
    if [[ -s $work/$name.stdout ]]; then
      printf '\n## %s\n\n```\n' "$name"
      cat "$work/$name.stdout"
      printf '```\n'
    fi
  done
  for name in gpu_tests train_gpu train_bf16; do
    if [[ -s $work/$name.stdout ]]; then
      printf '\n## %s (last lines)\n\n```\n' "$name"
      tail -n 5 "$work/$name.stdout"
      printf '```\n'
    fi
  done
  for name in "${failures[@]}"; do
    [[ -s $work/$name.stderr ]] || continue
    printf '\n## %s failed: the end of its stderr (%s.log has all)\n\n```\n' "$name" "$name"
    tail -n 8 "$work/$name.stderr"
    printf '```\n'
  done
} >"$out/summary.md"

echo "summary: $out/summary.md${failures[*]:+ (failed: ${failures[*]})}"
[[ ${#failures[@]} == 0 ]]
