#!/usr/bin/env bash
# `scripts/dockerd.sh start` starts dockerd when no engine answers and prints its PID (nothing
# when one was already running); `scripts/dockerd.sh stop PID` stops that one engine.
set -euo pipefail

case "${1:-}" in
start)
  if docker info >/dev/null 2>&1; then exit 0; fi
  mkdir -p /var/log/vind
  nohup dockerd >/var/log/vind/dockerd.log 2>&1 &
  pid=$!
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then echo "$pid"; exit 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.5
  done
  echo "error: dockerd did not start; see /var/log/vind/dockerd.log" >&2
  tail -n 20 /var/log/vind/dockerd.log >&2 || true
  exit 1
  ;;
stop)
  pid="${2:?usage: dockerd.sh stop PID}"
  kill "$pid" 2>/dev/null || exit 0
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  ;;
*)
  echo "usage: dockerd.sh start | stop PID" >&2
  exit 2
  ;;
esac
