#!/usr/bin/env bash
# Builds a local stand-in for docker.io/library/python:3.11-slim when no container registry is
# reachable: Debian bookworm (whose python3 is 3.11) from the Debian mirror by debootstrap, with
# `python` and `pip` on PATH as the official image has them, imported into podman as
# localhost/python:3.11-slim-local. Then build pitwall's image on it:
#
#   sudo deploy/local-base.sh
#   podman build --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
#     --build-arg PYTHON_IMAGE=localhost/python:3.11-slim-local -t localhost/pitwall:0.1.0 -f Containerfile .
#
# Idempotent: does nothing when the image exists (--force rebuilds it). Needs root (debootstrap).
# Environment: MIRROR (default http://deb.debian.org/debian), PODMAN (default "podman").
set -euo pipefail

IMAGE=localhost/python:3.11-slim-local
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PODMAN=${PODMAN:-podman}
force=0

die() { echo "local-base.sh: error: $*" >&2; exit 1; }

for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$arg' (only --force)" ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "debootstrap needs root: run it as root (sudo $0)"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install -y debootstrap)"
command -v "$PODMAN" >/dev/null || die "podman is not installed"

if [ "$force" -eq 0 ] && "$PODMAN" image exists "$IMAGE"; then
  echo "local-base.sh: $IMAGE already exists (--force rebuilds it)"
  exit 0
fi

tmp=$(mktemp -d /var/tmp/pitwall-local-base.XXXXXX)
# The rootfs holds device nodes and root-owned files: remove it whatever happens.
trap 'rm -rf --one-file-system "$tmp"' EXIT
root=$tmp/rootfs

echo "local-base.sh: debootstrap bookworm from $MIRROR into $root"
# libpython3.11-dev: the official image ships Python.h (in /usr/local/include); without it the
# Containerfile's `pip wheel` silently skips pitwall's optional C extensions.
debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,libpython3.11-dev,ca-certificates \
  bookworm "$root" "$MIRROR" >"$tmp/debootstrap.log" 2>&1 \
  || { tail -n 30 "$tmp/debootstrap.log" >&2; die "debootstrap failed (last lines above)"; }

# The official image's apt sees bookworm, its updates and security; the Containerfile's
# `apt-get install gcc libc6-dev` needs them all consistent.
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES

# `python` and `pip` as the official image names them (it has them in /usr/local/bin).
ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip"
# Debian marks its python "externally managed" (PEP 668); the official image's python is not,
# so let pip install system-wide here as it does there (into /usr/local, like the official one).
cat >"$root/etc/pip.conf" <<'PIPCONF'
[global]
break-system-packages = true
PIPCONF

# Keep it slim: package caches and lists are not part of the official image either.
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/tmp/* "$root"/var/tmp/*

echo "local-base.sh: importing as $IMAGE"
tar -C "$root" --numeric-owner -c . | "$PODMAN" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "debootstrap --variant=minbase bookworm + python3 python3-pip python3-venv libpython3.11-dev (stand-in for python:3.11-slim)" \
  - "$IMAGE" >/dev/null
"$PODMAN" image ls "$IMAGE"
