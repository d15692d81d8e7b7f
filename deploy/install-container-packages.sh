#!/usr/bin/env bash
# Install what `make test-compose` needs to build and run the compose stack with
# podman (no Docker engine on the build machines; docs/deployment.md), and write
# the containers.conf these machines need (see deploy/containers/containers.conf).
# Idempotent: does nothing when everything is present. Needs root (or sudo).
set -euo pipefail
packages=(podman podman-compose runc iptables netavark aardvark-dns debootstrap openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
