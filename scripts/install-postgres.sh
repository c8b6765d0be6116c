#!/bin/sh
# Install Debian's PostgreSQL server for the leaderboard's PostgreSQL tests if it is missing.
# Idempotent and quiet. The tests start their own throwaway server (initdb + pg_ctl into a
# temporary directory, see rlhf_gym/leaderboard/pgserver.py) and skip, saying why, where none
# can start; nothing here configures or starts a system-wide cluster for them.
set -eu
if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-postgres.sh: apt-get not found; install PostgreSQL yourself (PostgreSQL tests will be skipped)" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq postgresql >/dev/null 2>&1 || {
    $SUDO apt-get update -qq >/dev/null 2>&1
    $SUDO apt-get install -y -qq postgresql >/dev/null
} || echo "install-postgres.sh: could not install postgresql (PostgreSQL tests will be skipped)" >&2
