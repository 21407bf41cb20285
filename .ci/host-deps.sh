#!/bin/sh
# Host packages hvshare needs at run time: Debian's fuse (fusermount) and libfuse2 (the library fuse-native's
# prebuilt addon links). Installed only when missing, so a machine that has them pays nothing.
set -e
missing=""
command -v fusermount >/dev/null 2>&1 || missing="$missing fuse"
ldconfig -p 2>/dev/null | grep -q 'libfuse\.so\.2' || missing="$missing libfuse2"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "hvshare: needs Debian packages:$missing (run as root, or: sudo apt-get install -y$missing)" >&2
  exit 1
fi
echo "hvshare: installing Debian packages:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq $missing >&2
