#!/usr/bin/env bash
# Start the local services the tests need when they are not running, and stop afterwards only
# what this script started. Usage: scripts/services.sh start|stop STATEFILE
set -euo pipefail
action=${1:?start|stop}
state=${2:-var/started-services}
mkdir -p "$(dirname "$state")"

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }
pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q >/dev/null 2>&1; }

case "$action" in
start)
  : > "$state"
  if ! redis_up; then
    if ! command -v redis-server >/dev/null; then
      echo "Redis is not reachable on 127.0.0.1:6379 and redis-server is not installed." >&2
      echo "Install it (apt-get install redis-server) or run 'make up'." >&2
      exit 1
    fi
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 50); do redis_up && break; sleep 0.1; done
    echo redis >> "$state"
    echo "started redis-server"
  fi
  if ! pg_up; then
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
      for _ in $(seq 100); do pg_up && break; sleep 0.1; done
      echo postgres >> "$state"
      echo "started postgresql"
    else
      echo "PostgreSQL is not reachable on 127.0.0.1:5432 and no local cluster to start." >&2
      exit 1
    fi
  fi
  ;;
stop)
  [ -f "$state" ] || exit 0
  if grep -qx redis "$state"; then redis-cli -h 127.0.0.1 -p 6379 shutdown nosave >/dev/null 2>&1 || true; fi
  if grep -qx postgres "$state"; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main stop || true
  fi
  rm -f "$state"
  ;;
esac
