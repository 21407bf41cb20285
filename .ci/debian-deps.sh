#!/bin/sh
# Debian packages hvshare needs, installed only when missing (so a machine that has them pays nothing).
#   runtime: fuse (fusermount) and libfuse2 (the library fuse-native's addon links), and python3, make and g++,
#            which node-gyp builds that addon with from hvshare's patched source (README); required.
#   tests:   git, sqlite3, fio, rsync, attr (getfattr/setfattr) and acl (getfacl/setfacl), which the end-to-end
#            tests drive through real mounts; tests skip without fio.
set -e
missing=""
case "$1" in
  runtime)
    command -v fusermount >/dev/null 2>&1 || missing="$missing fuse"
    ldconfig -p 2>/dev/null | grep -q 'libfuse\.so\.2' || missing="$missing libfuse2"
    for tool in python3 make g++; do command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"; done
    ;;
  tests)
    for tool in git sqlite3 fio rsync; do command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"; done
    command -v getfattr >/dev/null 2>&1 || missing="$missing attr"
    command -v getfacl >/dev/null 2>&1 || missing="$missing acl"
    ;;
  *) echo "usage: $0 runtime|tests" >&2; exit 2 ;;
esac
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "hvshare: needs Debian packages:$missing (run as root, or: sudo apt-get install -y$missing)" >&2
  [ "$1" = runtime ] && exit 1
  exit 0
fi
echo "hvshare: installing Debian packages ($1):$missing" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq $missing; } >&2; then
  echo "hvshare: could not install$missing" >&2
  # The runtime cannot do without them; the tests that need a missing tool say so (fio's is skipped).
  [ "$1" = runtime ] && exit 1
fi
exit 0
