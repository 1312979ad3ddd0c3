#!/usr/bin/env bash
# slapnode set-up for a fresh Debian 12 machine, as root.
#
#   bash install.sh demo   install everything, then run the demo (the main job)
#   bash install.sh test   install everything the tests need, then run the tests
#
# Everything goes into .venv/ beside this file (Debian's python3), plus the
# Debian packages listed below. Re-running is safe and quick.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
mode=${1:-demo}
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== apt-get install ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Runtime: Python with venv, a compiler for wheels that may need one, curl for the demo,
# the shadow suite for partition users, iproute2, LXC for the partitions' containers,
# and the tools the software releases' recipes use (make, patch, dpkg-deb, apt, and
# patchelf to make Debian packages from another suite run from a release).
apt_install python3 python3-venv python3-dev gcc libc6-dev make patch curl ca-certificates \
  passwd iproute2 lxc nftables dnsmasq-base socat patchelf
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  /usr/bin/python3 -m venv .venv
fi
echo "== pip install slapnode (and its dependencies) into .venv"
.venv/bin/pip install -q --upgrade pip
# Every partition-side process (deployments, supervisord, build workers) is a new
# interpreter: byte-compile slapnode once rather than in each of them.
compile() { .venv/bin/python -m compileall -q slapnode master >/dev/null; }
# The browser assets the master serves itself (Swagger UI for /api/v1/docs; with --dev also
# axe-core, which the browser tests inject), from the npm registry at the versions and
# SHA-512 package-lock.json pins (master/web/assets.py; `npm ci` would do the same).
web_assets() { .venv/bin/python -m slapnode.master.web.assets "$@"; }
case "$mode" in
  demo)
    .venv/bin/pip install -q -e .
    compile
    web_assets
    exec bash .ci/demo
    ;;
  test)
    # Tests: PostgreSQL (the suite runs against SQLite and PostgreSQL), sudo-less root tools,
    # and Debian's chromium with a font for the browser tests (Playwright drives it; its own
    # browser downloads are neither needed nor possible here).
    apt_install postgresql postgresql-client bind9-dnsutils chromium fonts-dejavu-core
    # The deb recipe's tests fetch a real Debian package: apt's lists must exist.
    if [ -z "$(ls /var/lib/apt/lists/*_Packages* 2>/dev/null | head -1)" ]; then
      echo "== apt-get update (the deb recipe tests need apt's package lists)"
      apt-get update -qq
    fi
    .venv/bin/pip install -q -e '.[test]'
    compile
    web_assets --dev
    exec bash .ci/test
    ;;
  *)
    echo "usage: bash install.sh demo|test" >&2
    exit 2
    ;;
esac
