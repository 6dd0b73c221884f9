#!/usr/bin/env bash
# Build Dante 1.4.2 (client library, socksify, sockd) with GSSAPI, for the RFC 1961 interop
# tests (tests/rfc1961). Debian's dante packages are built without GSSAPI, and Debian's
# patched source tree does not build, so this builds Debian's ORIGINAL upstream tarball
# (dante_1.4.2+dfsg.orig.tar.xz, fetched with apt-get source from deb.debian.org through a
# private apt configuration: the system's sources are left alone).
#
# Installs into $SOCKS5D_DANTE_GSSAPI, by default
# ${XDG_CACHE_HOME:-$HOME/.cache}/socks5d/dante-1.4.2-gssapi, and prints that directory.
# Does nothing when a completed build is already there (the stamp file). Needs gcc, make,
# libc6-dev, libkrb5-dev, xz-utils (scripts/test.sh installs them); the tarball ships the
# generated parser and scanner, so neither bison nor flex is needed.
set -euo pipefail

VERSION=1.4.2
TARBALL="dante_${VERSION}+dfsg.orig.tar.xz"
PREFIX="${SOCKS5D_DANTE_GSSAPI:-${XDG_CACHE_HOME:-$HOME/.cache}/socks5d/dante-${VERSION}-gssapi}"
STAMP="$PREFIX/.socks5d-build-complete"
CONFIGURE_FLAGS=(--without-libwrap --without-pam --without-upnp)

fail() {
  echo "build-dante-gssapi: $*" >&2
  exit 1
}

if [ -f "$STAMP" ]; then
  echo "$PREFIX"
  exit 0
fi

mkdir -p "$(dirname "$PREFIX")"
# Two builds at once (parallel CI jobs sharing a cache) would install over each other.
exec 9>"$PREFIX.lock"
if command -v flock >/dev/null; then
  flock 9
  if [ -f "$STAMP" ]; then # the other build finished while we waited
    echo "$PREFIX"
    exit 0
  fi
fi

for tool in gcc make krb5-config tar xz; do
  command -v "$tool" >/dev/null || fail "$tool is missing; scripts/test.sh installs what this needs"
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/dante-gssapi-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# --- fetch the original tarball (signature-checked by apt through the Release file)
APT="$WORK/apt"
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/sources.list.d"
cat >"$APT/apt.conf" <<EOF
Dir::Etc::SourceList "$APT/sources.list";
Dir::Etc::SourceParts "$APT/sources.list.d";
Dir::State::Lists "$APT/lists";
Dir::Cache "$APT/cache";
EOF
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]" \
  "http://deb.debian.org/debian bookworm main" >"$APT/sources.list"
echo "build-dante-gssapi: fetching $TARBALL" >&2
APT_CONFIG="$APT/apt.conf" apt-get update -qq >"$WORK/fetch.log" 2>&1 ||
  { cat "$WORK/fetch.log" >&2; fail "apt-get update (deb-src bookworm) failed"; }
(cd "$WORK" && APT_CONFIG="$APT/apt.conf" apt-get source --download-only -qq dante) \
  >>"$WORK/fetch.log" 2>&1 || { cat "$WORK/fetch.log" >&2; fail "apt-get source dante failed"; }
[ -f "$WORK/$TARBALL" ] || { cat "$WORK/fetch.log" >&2; fail "$TARBALL was not downloaded"; }

# --- configure, build, install
tar -C "$WORK" -xf "$WORK/$TARBALL"
SRC="$WORK/dante-${VERSION}+dfsg"
[ -x "$SRC/configure" ] || fail "unexpected tarball layout: no $SRC/configure"
rm -rf "$PREFIX" # a build that stopped half way leaves no stamp
echo "build-dante-gssapi: building Dante $VERSION with GSSAPI into $PREFIX (about a minute)" >&2
(cd "$SRC" && ./configure "${CONFIGURE_FLAGS[@]}" --prefix="$PREFIX") >"$WORK/configure.log" 2>&1 ||
  { tail -40 "$WORK/configure.log" >&2; fail "configure failed"; }
if ! grep -Eq '^GSSAPI:[[:space:]]+Enabled' "$WORK/configure.log"; then
  grep -E '^(GSSAPI|KRB5|Preloading):' "$WORK/configure.log" >&2 || true
  fail "configure did not enable GSSAPI (is libkrb5-dev installed?)"
fi
grep -Eq '^Preloading:[[:space:]]+Enabled' "$WORK/configure.log" ||
  fail "configure did not enable preloading: socksify would not work"
make -C "$SRC" -j2 >"$WORK/make.log" 2>&1 || { tail -40 "$WORK/make.log" >&2; fail "make failed"; }
make -C "$SRC" install >"$WORK/install.log" 2>&1 ||
  { tail -40 "$WORK/install.log" >&2; fail "make install failed"; }
for built in sbin/sockd bin/socksify lib/libdsocks.so lib/libsocks.so; do
  [ -e "$PREFIX/$built" ] || fail "make install left no $PREFIX/$built"
done
cp "$WORK/configure.log" "$PREFIX/configure.log"
{
  echo "dante $VERSION from $TARBALL"
  echo "configure ${CONFIGURE_FLAGS[*]} --prefix=$PREFIX"
  grep -E '^(GSSAPI|KRB5|Preloading):' "$WORK/configure.log"
} >"$STAMP"
echo "$PREFIX"
