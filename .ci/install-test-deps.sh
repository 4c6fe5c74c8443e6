#!/bin/sh
# Install the Debian packages some tests need; without them those tests skip.
#
# Idempotent and quick when everything is installed (one dpkg-query per package). Installs
# only as root with apt-get; otherwise, or when apt cannot install, it prints why and exits 0
# so the rest of the suite still runs. Add packages to the list below, one per line.
set -u

PACKAGES="
dbus-daemon
gnome-keyring
libsecret-1-0
libdbus-1-dev
libglib2.0-dev
pkg-config
debootstrap
systemd-container
"
# dbus-daemon, gnome-keyring: a private Secret Service (tests/credentials/secret_service.py)
# libsecret-1-0: droid's keytar links against it to reach the Secret Service
# libdbus-1-dev, libglib2.0-dev, pkg-config: to build dbus-python, the [desktop] extra that
#   the desktop-notification test delivers through (tests/test_desktop.py)
# debootstrap, systemd-container: a Debian 12 booted with systemd-nspawn (tests/nspawn.py)

missing=""
for package in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $package"
    fi
done
if [ -z "$missing" ]; then
    echo "install-test-deps: all test packages installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: missing:$missing; not root, so the tests needing them will skip"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: missing:$missing; no apt-get, so the tests needing them will skip"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# Wait for another apt run instead of failing on its lock; refresh stale lists once.
install() {
    # shellcheck disable=SC2086  # $missing is a list of package names
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends $missing
}
if install || { apt-get -o DPkg::Lock::Timeout=300 update -q && install; }; then
    echo "install-test-deps: installed$missing"
else
    echo "install-test-deps: apt could not install$missing; the tests needing them will skip"
fi
exit 0
