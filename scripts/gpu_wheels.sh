#!/usr/bin/env bash
# Fill .whl/ with what scripts/gpu_check.sh needs on a GPU machine that cannot install from an index: wheels of
# trainstudy's dependencies that such an image (torch, lightning, tensorboard, scikit-learn, matplotlib, pytest
# already there) lacks, for its Python (3.12, x86-64 Linux), at the versions installed here.
#
#   scripts/gpu_wheels.sh                    # the names below, at this venv's versions (pip freeze)
#   scripts/gpu_wheels.sh --fashion-mnist    # also copy Fashion-MNIST's four files (30 MB) to .whl/FashionMNIST/raw,
#                                            # so the benches time real data there (gpu_check.sh looks for them)
#   scripts/gpu_wheels.sh rich tabulate      # other names instead (each must be installed here)
#   PYTHON=path/to/python WHEEL_PYTHON=3.11 scripts/gpu_wheels.sh
#
# Each name is fetched as a binary wheel for that Python and platform, as
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 ... -d .whl NAME==VERSION
# (a pure-python wheel, tagged none-any, matches every platform); a name published only as source (antlr4's
# runtime 4.9.3) is built here into a none-any wheel. One version of each is kept: two stop the install there.
set -euo pipefail
cd "$(dirname "$0")/.."

DEFAULT_NAMES=(hydra-core omegaconf antlr4-python3-runtime hydra-joblib-launcher hydra-submitit-launcher submitit
               mlxtend)
# pip matches a manylinux tag exactly, so the usual ones are named.
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)
DEST=.whl

if [[ -n "${PYTHON:-}" ]]; then py=$PYTHON
elif [[ -x .venv/bin/python ]]; then py=.venv/bin/python
else py=python3
fi
target_python=${WHEEL_PYTHON:-3.12}

fashion=0
names=()
for arg in "$@"; do
  case $arg in
    --fashion-mnist) fashion=1 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "error: unknown option $arg (see --help)" >&2; exit 2 ;;
    *) names+=("$arg") ;;
  esac
done
[[ ${#names[@]} -gt 0 ]] || names=("${DEFAULT_NAMES[@]}")

mkdir -p "$DEST"
freeze=$("$py" -m pip freeze 2>/dev/null)
platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done

# A distribution's name as pip freeze and wheel files spell it: case-insensitive, '-', '_' and '.' alike.
normalize() { tr '[:upper:]' '[:lower:]' <<<"$1" | tr '_.' '--'; }
installed_version() {  # NAME (normalized): its version in pip freeze, or nothing
  local line
  while IFS= read -r line; do
    if [[ $line == *==* && $(normalize "${line%%==*}") == "$1" ]]; then echo "${line#*==}"; fi
  done <<<"$freeze"
}

for name in "${names[@]}"; do
  want=$(normalize "$name")
  version=$(installed_version "$want")
  if [[ -z $version ]]; then
    echo "error: $name is not installed in $py's environment; install it there, or name another" >&2
    exit 2
  fi
  # drop other versions of it first: the install on the GPU machine takes every wheel in the folder
  for old in "$DEST"/*.whl; do
    [[ -e $old ]] || continue
    base=$(basename "$old")
    if [[ $(normalize "${base%%-*}") == "$want" ]]; then rm -f "$old"; fi
  done
  if "$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$target_python" --implementation cp \
       "${platform_args[@]}" -d "$DEST" "$name==$version" 2>/dev/null; then
    echo "$name==$version: downloaded"
  else
    built=$(mktemp -d)
    "$py" -m pip wheel -q --no-deps -w "$built" "$name==$version"
    wheel=$(ls "$built"/*.whl)
    if [[ $wheel != *-none-any.whl ]]; then
      echo "error: $name==$version has no wheel for Python $target_python and builds only for this machine" \
           "($(basename "$wheel"))" >&2
      exit 1
    fi
    mv "$wheel" "$DEST"/ && rmdir "$built"
    echo "$name==$version: built from its source ($(basename "$wheel"))"
  fi
done

if [[ $fashion == 1 ]]; then
  files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
  for src in "${TRAINSTUDY_DATA_DIR:-data}/FashionMNIST/raw" /usr/share/datasets/fashion-mnist; do
    found=1
    for f in "${files[@]}"; do [[ -f $src/$f.gz || -f $src/$f ]] || found=0; done
    if [[ $found == 1 ]]; then
      mkdir -p "$DEST/FashionMNIST/raw"
      for f in "${files[@]}"; do cp "$src/$f"* "$DEST/FashionMNIST/raw/"; done
      echo "Fashion-MNIST: copied from $src"
      break
    fi
  done
  if [[ $found == 0 ]]; then
    echo "error: Fashion-MNIST is in neither ${TRAINSTUDY_DATA_DIR:-data}/FashionMNIST/raw nor" \
         "/usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist)" >&2
    exit 2
  fi
fi
echo "$DEST/: $(du -sh "$DEST" | cut -f1); scripts/gpu_check.sh installs it on the GPU machine"
