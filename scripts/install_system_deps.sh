#!/usr/bin/env bash
# System packages the tests need: the public-domain Open Clip Art images (Debian
# packages openclipart-png + openclipart-svg), the image-text alignment corpus.
# Idempotent; uses sudo when not root. Set MMREC_SKIP_APT=1 to skip.
set -euo pipefail
pkgs=(openclipart-png openclipart-svg)
if [ "${MMREC_SKIP_APT:-0}" = "1" ]; then exit 0; fi
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_system_deps: no apt-get; install ${missing[*]} (Debian/Ubuntu) or set MMREC_SKIP_APT=1" >&2
  exit 1
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install_system_deps: installed ${missing[*]}" >&2
