#!/usr/bin/env bash
# System packages the test suite needs that pip cannot install: Debian's Chromium for the browser tests and a
# CJK font (fonts-wqy-zenhei), so the Chinese UI's screenshots show characters, not boxes; Debian's podman,
# buildah, runc and docker-registry for the container executor and the real module builds (tests/containers).
# PostgreSQL is expected on 127.0.0.1:5432 (see .ci/run, which starts it when it is down).
set -euo pipefail
# Every apt-get below waits for the package database instead of failing when another apt (a second checkout's
# `make install-test`, unattended upgrades) holds it: one set-up at a time through our own lock, and up to ten
# minutes for anyone else's.
APT_LOCK=/var/lock/aihub-ensure-test-deps.lock
apt_install() {
  (
    flock -w 900 9 || { echo "warning: waited 15 minutes for $APT_LOCK" >&2; exit 1; }
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >/dev/null
  ) 9>"$APT_LOCK"
}
# Debian's static busybox: the simulated kubelet runs the Kubernetes wrapper with the real applets
if ! command -v busybox >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  apt_install busybox-static || true
fi
# (grep without -q reads all of fc-list's output: an early exit would fail the pipeline on SIGPIPE under pipefail)
if ! fc-list : family 2>/dev/null | grep -i "WenQuanYi Zen Hei" >/dev/null; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian fonts-wqy-zenhei for the Chinese browser tests"
    apt_install fonts-wqy-zenhei
  else
    echo "warning: fonts-wqy-zenhei is missing; install it (apt-get install fonts-wqy-zenhei) for Chinese screenshots" >&2
  fi
fi
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian chromium for the browser tests"
    apt_install chromium
  else
    echo "warning: chromium is missing; install it (apt-get install chromium) to run the browser tests" >&2
  fi
fi
# A container engine for the container executor and AIHUB_BUILDER=container (tests/containers): Debian's podman
# with runc (crun fails on this machine's hybrid cgroup layout), buildah, and docker-registry as the test registry.
if ! command -v podman >/dev/null 2>&1 || ! command -v docker-registry >/dev/null 2>&1 \
  || ! command -v runc >/dev/null 2>&1 || ! command -v buildah >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian podman, buildah, runc and docker-registry for the container tests"
    apt_install podman buildah runc docker-registry || true
  else
    echo "warning: podman is missing; install podman buildah runc docker-registry to run the container tests" >&2
  fi
fi
# debootstrap: the offline Debian base with python3 that the platform image's test builds FROM (tests/containers)
if ! command -v debootstrap >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian debootstrap for the platform image test"
  apt_install debootstrap || true
fi
# podman's engine settings for this machine, written only where the host has no containers.conf of its own (a host
# whose podman already works keeps its settings): no default ulimits (the sandbox refuses to raise them),
# cgroupfs and runc (no systemd, hybrid cgroups), events in a file (no journald) so the events tab has them.
CONTAINERS_CONF=/etc/containers/containers.conf
CONTAINERS_MARK="# written by AIHub Workflow's scripts/ensure-test-deps.sh"
if command -v podman >/dev/null 2>&1 && [ "$(id -u)" = "0" ] \
  && { [ ! -e "$CONTAINERS_CONF" ] || head -n 1 "$CONTAINERS_CONF" | grep -qF "$CONTAINERS_MARK"; }; then
  mkdir -p /etc/containers
  cat >"$CONTAINERS_CONF.tmp" <<EOF_CONF
$CONTAINERS_MARK (delete this file to stop it being rewritten)
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
EOF_CONF
  mv "$CONTAINERS_CONF.tmp" "$CONTAINERS_CONF"
fi
