#!/usr/bin/env bash
# Makes this x86-64 Debian/Ubuntu machine able to run arm64 Linux binaries (the registry's arm64
# Node): Debian's qemu-user-static (binfmt or called directly) and the arm64 C and C++ runtime
# libraries Node links to (libc6:arm64, libstdc++6:arm64).
# Installs only what is absent; exits 1 (with the reason on stderr) when it cannot: no apt, not
# root and no sudo, or the packages fail to install. Prints the qemu-aarch64 binary to use.
set -euo pipefail
qemu="$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)"
have_libc() { [ -e /lib/ld-linux-aarch64.so.1 ] && [ -e /usr/lib/aarch64-linux-gnu/libc.so.6 ]; }
have_libstdcxx() { [ -e /usr/lib/aarch64-linux-gnu/libstdc++.so.6 ]; }
if [ -n "$qemu" ] && have_libc && have_libstdcxx; then echo "$qemu"; exit 0; fi
if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
  echo "install-arm64: no apt-get/dpkg on this machine" >&2; exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else echo "install-arm64: not root and no password-less sudo" >&2; exit 1; fi
fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then $SUDO dpkg --add-architecture arm64; fi
pkgs=()
[ -n "$qemu" ] || pkgs+=(qemu-user-static)
have_libc || pkgs+=(libc6:arm64)
have_libstdcxx || pkgs+=(libstdc++6:arm64)
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq >&2 && $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2; }; then
  echo "install-arm64: apt-get install ${pkgs[*]} failed" >&2; exit 1
fi
qemu="$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)"
if [ -z "$qemu" ] || ! have_libc || ! have_libstdcxx; then echo "install-arm64: qemu-aarch64 or the arm64 libraries still missing" >&2; exit 1; fi
echo "$qemu"
