#!/usr/bin/env bash
# Installs the system packages Tricks needs (Debian/Ubuntu): Open MPI, OpenBLAS, zlib, libjpeg-turbo, libpng,
# pkg-config, python3 (the tests run an independent mAP script) and the Fashion-MNIST data set. Does nothing when they are already there.
set -euo pipefail
pkgs=(libopenmpi-dev openmpi-bin libopenblas-dev zlib1g-dev libjpeg-dev libpng-dev pkg-config python3 dataset-fashion-mnist)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
