#!/usr/bin/env bash
# Debian packages the tests and benchmarks drive: real NBD clients, a reference NBD server, fio,
# and what the ext4-over-nbdfuse round trip needs; chromium (and a font) for the visualizer's
# browser test, which playwright-core drives. Run as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  libnbd-bin nbdkit qemu-utils fio e2fsprogs fuse3 util-linux mount procps iproute2 openssl \
  chromium fonts-dejavu-core >/dev/null
