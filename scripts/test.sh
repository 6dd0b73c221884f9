#!/usr/bin/env bash
# Install everything the tests need (Debian packages and the Python test extras), then run
# pytest. Extra arguments go to pytest: scripts/test.sh tests/proto -x
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  curl            # curl --socks5 / --socks5-hostname
  ncat            # ncat --proxy-type socks5
  proxychains4    # proxychains4 running curl
  dante-client    # Dante's socksify
  dante-server    # Dante's sockd (client interop, later issues)
  microsocks      # a second third-party server (client interop, later issues)
  iproute2        # ip netns: private networks for reply-code tests
  gcc             # the benchmark's load generator (bench/loadgen.c), built by its smoke test
  libc6-dev
  krb5-kdc        # GSSAPI tests: a throwaway Kerberos realm's KDC (krb5kdc, kdb5_util)
  krb5-admin-server  # kadmin.local: the realm's principals and keytabs
  krb5-user       # kinit, klist, kdestroy
  libkrb5-dev     # Dante built with GSSAPI (scripts/build-dante-gssapi.sh); python-gssapi
  make            # that build
  xz-utils        # unpacking Dante's source tarball
  debian-archive-keyring  # checking the deb-src index the tarball is fetched through
  systemd         # systemd-analyze verify of contrib/socks5d.service
  logrotate       # logrotate --debug of contrib/socks5d.logrotate
  haproxy         # the load balancer of the many-instances tests (PROXY protocol)
  tinyproxy       # an HTTP CONNECT proxy: client http:// and routing upstream tests
)
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test,dev,fast,bench,gssapi,metrics,httpx,http2,aiohttp,requests,anyio]'
# Dante with GSSAPI for the RFC 1961 interop tests (tests/rfc1961); built once, then cached.
SOCKS5D_DANTE_GSSAPI="$(bash scripts/build-dante-gssapi.sh)"
export SOCKS5D_DANTE_GSSAPI
exec python3 -m pytest "$@"
