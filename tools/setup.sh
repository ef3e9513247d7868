#!/usr/bin/env bash
# Installs what Tessera needs on a fresh Debian machine (run as root; idempotent).
# System packages: OpenBLAS, OpenCL and Vulkan headers, and the runtimes the GPU-kernel
# tests use without a GPU (PoCL, Mesa's lavapipe, glslc). The Swift toolchain is expected
# on PATH (swift.org's Debian build).
set -euo pipefail

packages=(libopenblas-dev pkg-config ocl-icd-opencl-dev libvulkan-dev pocl-opencl-icd mesa-vulkan-drivers glslc python3 python3-pip)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# python3/pip may come from elsewhere (pyenv): only ask apt for them when absent.
if command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; then
  filtered=()
  for p in "${missing[@]}"; do [[ "$p" == python3 || "$p" == python3-pip ]] || filtered+=("$p"); done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi
# The openai-client tests make a venv: Debian's python3 needs python3-venv for that.
if command -v python3 >/dev/null && ! python3 -c 'import ensurepip' 2>/dev/null; then missing+=(python3-venv); fi
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "setup: swift is not on PATH; install the Swift toolchain (swift.org) first" >&2; exit 1; }
echo "setup: system packages present" >&2
