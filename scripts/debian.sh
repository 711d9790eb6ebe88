#!/usr/bin/env bash
# debian.sh NAME... — makes sure the Debian packages the end-to-end tests
# use are installed, at pinned upstream versions (the Debian revision may
# move with security updates), and prints nothing when they already are.
# Each NAME is a package of the table below; it is installed when its
# command is missing.
set -euo pipefail

for name in "$@"; do
  extra=()
  case "$name" in
    # The cloud backend guide's backend: nginx with ssl_verify_client on.
    nginx-light) cmd=nginx; ver='1.22.1-*' ;;
    # make images: OCI images from scratch, rootless-friendly (vfs storage).
    buildah) cmd=buildah; ver='1.28.2+ds1-*' ;;
    # The operator console's browser test: headless Chromium driven by
    # chromedp (tests/e2e/console_test.go), with a font for its
    # screenshots (a recommendation, which --no-install-recommends skips).
    chromium) cmd=chromium; ver='156.0.8078.114-*'; extra=(fonts-liberation) ;;
    *) echo "debian.sh: unknown package $name" >&2; exit 2 ;;
  esac
  if command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ]; then
    continue
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "debian.sh: $name is not installed and this is not root: run 'sudo apt-get install $name=$ver'" >&2
    exit 1
  fi
  echo "installing $name $ver from Debian's packages" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$name=$ver" "${extra[@]}" >&2
done
