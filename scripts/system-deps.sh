#!/usr/bin/env bash
# Install the system libraries speechcodec needs: apt-get on Debian/Ubuntu when root,
# otherwise say exactly what to install. libsndfile comes inside the soundfile wheel.
#   scripts/system-deps.sh          libopus0 (Opus baseline), codec2 (the baseline below Opus's
#                                   floor: libcodec2), espeak-ng (demo corpus)
#   scripts/system-deps.sh --test   also chromium, for the listening page's browser test (optional:
#                                   without it, and without root to install it, that test skips)
set -euo pipefail
needed=()
have_lib() { ldconfig -p 2>/dev/null | grep -q "$1"; }
have_lib "libopus.so.0" || needed+=(libopus0)
have_lib "libcodec2.so" || needed+=(codec2)
command -v espeak-ng >/dev/null 2>&1 || needed+=(espeak-ng)
can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null 2>&1; then
  if can_install; then
    needed+=(chromium)
  else
    echo "note: chromium is not installed, so the listening page's browser test will skip" \
         "(Debian/Ubuntu: sudo apt-get install chromium)" >&2
  fi
fi
[ ${#needed[@]} -eq 0 ] && exit 0
if can_install; then
  echo "installing system packages: ${needed[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Another apt-get (unattended upgrades, a second shell) holds dpkg's lock: wait for it.
  apt=(apt-get -o DPkg::Lock::Timeout=600)
  "${apt[@]}" update -qq >/dev/null
  "${apt[@]}" install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
else
  echo "speechcodec needs the system packages: ${needed[*]}" >&2
  echo "install them (Debian/Ubuntu: sudo apt-get install ${needed[*]}; macOS: brew install opus codec2 espeak-ng) and rerun" >&2
  exit 1
fi
