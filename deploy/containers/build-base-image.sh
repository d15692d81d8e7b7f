#!/usr/bin/env bash
# Build the `debian:bookworm` base image locally with debootstrap, for machines
# that cannot pull from a container registry (the build and CI machines). Uses
# this machine's own Debian mirror (from /etc/apt/sources.list.d/*.sources or
# /etc/apt/sources.list) and puts the same apt sources and the machine's extra
# CA certificates (/usr/local/share/ca-certificates) into the image, so apt and
# pip work in builds behind a TLS-intercepting proxy. Does nothing when the
# image exists. Needs root, podman and debootstrap
# (deploy/install-container-packages.sh).
#
#   deploy/containers/build-base-image.sh [IMAGE]     (default debian:bookworm)
set -euo pipefail
image=${1:-debian:bookworm}
suite=bookworm
if podman image exists "$image"; then
  echo "base image $image exists"
  exit 0
fi

mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  # The first URIs line of a stanza whose Suites line holds the plain suite.
  mirror=$(awk -v s="$suite" '
    /^[[:space:]]*$/ { if (uri != "" && hit) { print uri; exit } uri=""; hit=0; next }
    /^URIs:/   { uri=$2 }
    /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) hit=1 }
    END { if (uri != "" && hit) print uri }' "$f" | head -n1)
  [ -n "$mirror" ] && break
done
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk -v s="$suite" '$1 == "deb" && $3 == s { print $2; exit }' /etc/apt/sources.list)
fi
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d /var/tmp/mailgate-rootfs.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
echo "debootstrap $suite from $mirror"
start=$SECONDS
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log"; exit 1; }

# The host's apt sources (deb822 or one-line) and extra CA certificates.
rm -f "$rootfs/etc/apt/sources.list"
copied=0
for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
  [ -f "$f" ] || continue
  cp "$f" "$rootfs/etc/apt/sources.list.d/"
  copied=1
done
if [ "$copied" = 0 ]; then
  if [ -f /etc/apt/sources.list ]; then
    cp /etc/apt/sources.list "$rootfs/etc/apt/sources.list"
  else
    echo "deb $mirror $suite main" >"$rootfs/etc/apt/sources.list"
  fi
fi
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$rootfs/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" sh -c 'apt-get install -y -qq --no-install-recommends ca-certificates \
      >/dev/null 2>&1 || true; command -v update-ca-certificates >/dev/null && \
      update-ca-certificates >/dev/null || true'
fi
# Small and clean: no apt lists, no caches.
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
tar -C "$rootfs" -c . | podman import --change 'CMD ["bash"]' - "$image" >/dev/null
echo "base image $image built in $((SECONDS - start)) s"
