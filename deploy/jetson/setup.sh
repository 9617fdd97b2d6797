#!/usr/bin/env bash
# Set up edge-bridge on a Jetson Orin with JetPack 6 (L4T R36: TensorRT 10, CUDA 12, Python 3.10).
#
#   sudo deploy/jetson/setup.sh [BUNDLE_DIR] [SOURCE_SPEC]
#
# Steps (each is idempotent; re-running the script is safe):
#   1. check the platform (aarch64, L4T R36 / JetPack 6, Python 3.10, TensorRT's Python bindings)
#   2. apt packages: build tools for BrainFlow, venv, TensorRT's Python bindings (python3-libnvinfer)
#   3. copy the project to /opt/edge-bridge and make a venv that sees the system's tensorrt module
#   4. onnxruntime-gpu from NVIDIA's Jetson index (PyPI has no aarch64 GPU build), cuda-python from PyPI
#   5. BrainFlow built from source (its PyPI wheel carries x86-64 libraries only)
#   6. edge-bridge itself, without re-resolving torch (the device path never imports it)
#   7. a service user, /etc/default/edge-bridge, the systemd unit; enable it at boot
#   8. a self-test: build and cache the TensorRT engines of the bundle and compare with golden.npz
#
# Variables you may override: PREFIX (/opt/edge-bridge), ORT_INDEX_URL (NVIDIA's Jetson index for JetPack 6 /
# CUDA 12.6), BRAINFLOW_REF (a BrainFlow release tag), SKIP_SERVICE=1 (no systemd unit).
set -euo pipefail

PREFIX="${PREFIX:-/opt/edge-bridge}"
ORT_INDEX_URL="${ORT_INDEX_URL:-https://pypi.jetson-ai-lab.dev/jp6/cu126}"
BRAINFLOW_REF="${BRAINFLOW_REF:-5.23.0}"
BUNDLE="${1:-/var/lib/edge-bridge/bundle}"
SOURCE="${2:-synthetic}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

say() { printf '\n== %s\n' "$*"; }
die() { printf 'setup.sh: error: %s\n' "$*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "run as root (sudo $0 ...): it installs packages and a systemd unit"

say "1/8 checking the platform"
[[ "$(uname -m)" == "aarch64" ]] || die "expected an aarch64 Jetson, found $(uname -m)"
if [[ -f /etc/nv_tegra_release ]]; then
    grep -q "R36" /etc/nv_tegra_release || echo "warning: $(head -n1 /etc/nv_tegra_release) is not L4T R36 (JetPack 6); continuing"
else
    die "no /etc/nv_tegra_release: this is not a Jetson running L4T (flash JetPack 6 first)"
fi
command -v python3.10 >/dev/null || die "JetPack 6 ships Python 3.10; python3.10 was not found"

say "2/8 apt packages"
apt-get update
apt-get install -y --no-install-recommends python3.10-venv python3-dev python3-pip build-essential cmake git \
    python3-libnvinfer python3-libnvinfer-dev
python3.10 -c "import tensorrt; print('tensorrt', tensorrt.__version__)" \
    || die "TensorRT's Python bindings do not import; install JetPack 6 (sudo apt install nvidia-jetpack)"

say "3/8 project and venv in $PREFIX"
mkdir -p "$PREFIX"
if [[ "$REPO" != "$PREFIX" ]]; then
    # the working tree without build outputs, caches or a host venv
    tar -C "$REPO" --exclude=.venv --exclude=.git --exclude='*.pyc' --exclude=.pytest_cache -cf - . | tar -C "$PREFIX" -xf -
fi
# --system-site-packages: tensorrt comes from apt (python3-libnvinfer) and is not on PyPI for JetPack
[[ -x "$PREFIX/.venv/bin/python" ]] || python3.10 -m venv --system-site-packages "$PREFIX/.venv"
PIP=("$PREFIX/.venv/bin/python" -m pip install --disable-pip-version-check)
"${PIP[@]}" --upgrade pip wheel "setuptools<81"

say "4/8 onnxruntime-gpu (NVIDIA's Jetson index) and cuda-python"
"${PIP[@]}" --index-url "$ORT_INDEX_URL" --extra-index-url https://pypi.org/simple onnxruntime-gpu \
    || die "onnxruntime-gpu did not install from $ORT_INDEX_URL; set ORT_INDEX_URL to NVIDIA's index for your JetPack"
"${PIP[@]}" "cuda-python>=12.4,<13" "numpy>=1.26,<2.3" "scipy>=1.11" onnx

say "5/8 BrainFlow $BRAINFLOW_REF from source"
BF_SRC="$PREFIX/build/brainflow"
if [[ ! -d "$BF_SRC/.git" ]]; then
    git clone --depth 1 --branch "$BRAINFLOW_REF" https://github.com/brainflow-dev/brainflow.git "$BF_SRC"
fi
(cd "$BF_SRC" && "$PREFIX/.venv/bin/python" tools/build.py)
"${PIP[@]}" "$BF_SRC/python_package"
"$PREFIX/.venv/bin/python" -c "from brainflow.board_shim import BoardShim; print('brainflow', BoardShim.get_version())"

say "6/8 edge-bridge"
# --no-deps: the host dependencies (torch, onnxscript, scikit-learn) are not needed on the device path
"${PIP[@]}" --no-deps -e "$PREFIX"
"${PIP[@]}" edfio safetensors tqdm pyserial

say "7/8 service user, settings and systemd unit"
id -u edge-bridge >/dev/null 2>&1 || useradd --system --home /var/lib/edge-bridge --shell /usr/sbin/nologin edge-bridge
mkdir -p /var/lib/edge-bridge /var/cache/edge-bridge
chown edge-bridge:edge-bridge /var/lib/edge-bridge /var/cache/edge-bridge
if [[ ! -f /etc/default/edge-bridge ]]; then
    cat >/etc/default/edge-bridge <<CONF
# edge-bridge deploy settings (read by edge-bridge.service)
EDGE_BRIDGE_BUNDLE=$BUNDLE
EDGE_BRIDGE_SOURCE=$SOURCE
# more options, e.g. --smoothing ema --lsl
EDGE_BRIDGE_ARGS=
CONF
fi
if [[ "${SKIP_SERVICE:-0}" != "1" ]]; then
    install -m 0644 "$HERE/edge-bridge.service" /etc/systemd/system/edge-bridge.service
    systemctl daemon-reload
    systemctl enable edge-bridge.service
fi

say "8/8 self-test: TensorRT engines for $BUNDLE (built once, cached in /var/cache/edge-bridge)"
if [[ -f "$BUNDLE/manifest.json" ]]; then
    sudo -u edge-bridge env XDG_CACHE_HOME=/var/cache/edge-bridge "$PREFIX/.venv/bin/edge-bridge" deploy \
        --device jetson --bundle "$BUNDLE" --self-test-only
    [[ "${SKIP_SERVICE:-0}" == "1" ]] || systemctl restart edge-bridge.service
    echo "running: journalctl -u edge-bridge -f"
else
    echo "no bundle at $BUNDLE yet: copy one there (edge-bridge export on the host), then"
    echo "  sudo systemctl start edge-bridge"
fi
