#!/usr/bin/env bash
# Installs what vind needs on a Debian host to build node images, run clusters and run the tests:
# Docker (Debian's docker.io), debootstrap, and the C toolchain and libseccomp for runc.
# Go 1.24+ and Node.js 20+ are expected to be installed already.
set -euo pipefail

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
[ -e /usr/include/seccomp.h ] || missing+=(libseccomp-dev)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
# A static busybox becomes the small test image of the end-to-end tests.
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
# The datastore tests start PostgreSQL, MariaDB and etcd servers of their own.
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql)
[ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)

# The node image's busybox helper and the iperf3 test image are fetched with `apt-get download`,
# which needs the package lists even when nothing is missing.
lists=$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' 2>/dev/null | head -n 1)
if [ ${#missing[@]} -gt 0 ] || [ -z "$lists" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

for tool in go node npm; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is not installed" >&2; exit 1; }
done
