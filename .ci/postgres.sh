#!/usr/bin/env bash
# PostgreSQL's server programs for the store tests, which start a throwaway cluster of
# their own (tests/pgserver.py). Installs Debian's package when initdb and pg_ctl are
# missing; does nothing else. Runs as root, without a terminal.
set -euo pipefail

if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    exit 0
fi
for bin in /usr/lib/postgresql/*/bin; do
    if [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ]; then
        exit 0
    fi
done

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq </dev/null
apt-get install -y -qq postgresql </dev/null >/dev/null
