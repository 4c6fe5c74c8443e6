#!/bin/sh
# Fetch the real droid CLI that tests/credentials/test_droid_interop.py runs against.
#
# `npm pack`s @factory/cli-linux-x64@0.225.2 into .cache/ (gitignored) and unpacks it to
# .cache/droid-0.225.2/package/bin/droid, only when it is not there yet. Nothing is
# installed and no install script runs. When the registry cannot be reached this prints why
# and exits 0: the interop tests then skip with a message of their own.
set -eu

VERSION=0.225.2
PACKAGE="@factory/cli-linux-x64@$VERSION"
ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
CACHE="$ROOT/.cache"
DEST="$CACHE/droid-$VERSION"
BINARY="$DEST/package/bin/droid"

if [ -x "$BINARY" ]; then
    echo "fetch-droid: droid $VERSION already at $BINARY"
    exit 0
fi
case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) ;;
    *) echo "fetch-droid: $PACKAGE runs on Linux x86_64 only; interop tests will skip"; exit 0 ;;
esac
if ! command -v npm >/dev/null 2>&1; then
    echo "fetch-droid: npm not found; interop tests will skip"
    exit 0
fi

mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/fetch-droid.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM

# The tarball (115 MB) is also kept outside the checkout, so that fresh clones on the
# same machine (CI) unpack it instead of downloading it again.
SHARED="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/factory-usage-alert"
TARBALL="factory-cli-linux-x64-$VERSION.tgz"
if [ -s "$SHARED/$TARBALL" ] && tar -tzf "$SHARED/$TARBALL" package/bin/droid >/dev/null 2>&1; then
    cp "$SHARED/$TARBALL" "$WORK/$TARBALL"
    echo "fetch-droid: using the cached $SHARED/$TARBALL"
# Bounded retries and timeout: an offline CI runner should not sit here for minutes.
elif (cd "$WORK" && npm pack --fetch-retries=1 --fetch-timeout=30000 "$PACKAGE" \
        >"$WORK/npm.out" 2>"$WORK/npm.log"); then
    TARBALL=$(tail -n 1 "$WORK/npm.out")
    if mkdir -p "$SHARED" 2>/dev/null; then
        cp "$WORK/$TARBALL" "$SHARED/$TARBALL.part" && mv "$SHARED/$TARBALL.part" "$SHARED/$TARBALL" || true
    fi
else
    echo "fetch-droid: cannot fetch $PACKAGE from the npm registry; interop tests will skip"
    grep -i 'err' "$WORK/npm.log" | head -n 3 | sed 's/^/fetch-droid:   /' || true
    exit 0
fi

mkdir -p "$WORK/unpacked"
tar -xzf "$WORK/$TARBALL" -C "$WORK/unpacked"
chmod +x "$WORK/unpacked/package/bin/droid"
mv "$WORK/$TARBALL" "$CACHE/"
# Move into place last, so an interrupted fetch never leaves a half-unpacked binary.
rm -rf "$DEST"
mv "$WORK/unpacked" "$DEST"
echo "fetch-droid: droid $VERSION unpacked to $BINARY"
