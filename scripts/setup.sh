#!/usr/bin/env bash
# Set up everything sonify needs on a fresh Debian/Ubuntu machine (run as root or with sudo).
#   bash scripts/setup.sh
# - apt: PortAudio (the library behind sounddevice, for live audio), and for the
#        live-audio tests a headless sound server: PulseAudio with its ALSA plugin
#        (the tests start a private server with a virtual speaker themselves);
#        for the tests of `sonify serve`'s page, Debian's chromium (driven by Playwright,
#        which never downloads a browser here)
# - pip: torch FIRST (an already-satisfied pin never pulls another, multi-GB build),
#        the torchvision release that matches it, then sonify with its dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=${SONIFY_TORCH_VERSION:-2.13.0}
APT_PACKAGES=(libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins)
# chromium with its recommended packages (fonts among them): the way ../shared/tools/browser measured it.
BROWSER_PACKAGES=(chromium)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if command -v apt-get >/dev/null 2>&1; then
    echo "[setup] apt: ${APT_PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
    echo "[setup] apt: ${BROWSER_PACKAGES[*]} (for the browser tests)"
    $SUDO apt-get install -y -qq "${BROWSER_PACKAGES[@]}" >/dev/null
else
    echo "[setup] no apt-get: install PortAudio with your package manager (e.g. brew install portaudio)" >&2
fi

PIP="python -m pip"
echo "[setup] pip: torch==$TORCH_VERSION"
$PIP install -q "torch==$TORCH_VERSION"
# torchvision minor = torch minor + 15 (torch 2.13 -> torchvision 0.28).
TV_MINOR=$(( $(echo "$TORCH_VERSION" | cut -d. -f2) + 15 ))
echo "[setup] pip: torchvision==0.$TV_MINOR.*"
$PIP install -q "torchvision==0.$TV_MINOR.*" "torch==$TORCH_VERSION"
echo "[setup] pip: sonify[dev]"
# DeepSpeed (a dev dependency, for its tests) compiles its ops only when first used, and never the CUDA ones here.
export DS_BUILD_OPS=0 DS_ACCELERATOR=cpu
$PIP install -q -e ".[dev]" "torch==$TORCH_VERSION"
python -c "import torch; assert torch.__version__.startswith('$TORCH_VERSION'), torch.__version__; print('[setup] done: torch', torch.__version__)"
