#!/usr/bin/env bash
# System packages the test suite needs that pip cannot install: Debian's Chromium for the browser tests and a
# CJK font (fonts-wqy-zenhei), so the Chinese UI's screenshots show characters, not boxes.
# PostgreSQL is expected on 127.0.0.1:5432 (see .ci/run, which starts it when it is down).
set -euo pipefail
# Debian's static busybox: the simulated kubelet runs the Kubernetes wrapper with the real applets
if ! command -v busybox >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null || true
fi
if ! fc-list 2>/dev/null | grep -qi "wqy zenhei"; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian fonts-wqy-zenhei for the Chinese browser tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-zenhei >/dev/null
  else
    echo "warning: fonts-wqy-zenhei is missing; install it (apt-get install fonts-wqy-zenhei) for Chinese screenshots" >&2
  fi
fi
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian chromium for the browser tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "warning: chromium is missing; install it (apt-get install chromium) to run the browser tests" >&2
  fi
fi
