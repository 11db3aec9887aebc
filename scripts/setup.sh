#!/usr/bin/env bash
# Set up everything `make demo` and `make test` need, idempotently, on a Debian-like machine:
# system packages (RabbitMQ, a C toolchain, venv support), the .venv, and the package itself
# (the Rust extension built by maturin, installed editable with the test extras).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
say() { printf '[setup] %s\n' "$*" >&2; }

need_apt=()
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need_apt+=(rabbitmq-server)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
# MPI engine: Debian's OpenMPI provides mpiexec
command -v mpiexec >/dev/null 2>&1 || need_apt+=(openmpi-bin)
"$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# the dashboard's browser test (tests/test_dashboard_browser.py): installed when we can, but
# nothing else needs them, so without root or sudo that one test skips instead
want_apt=()
command -v chromium >/dev/null 2>&1 || want_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || want_apt+=(chromium-driver)
apt_as=()
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt_as=(env)
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  apt_as=(sudo)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ ${#apt_as[@]} -gt 0 ]; then
    say "installing Debian packages: ${need_apt[*]}"
    "${apt_as[@]}" DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${apt_as[@]}" DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    say "missing Debian packages: ${need_apt[*]}"
    say "install them with: sudo apt-get install ${need_apt[*]} ${want_apt[*]}"
    exit 1
  fi
fi
if [ ${#want_apt[@]} -gt 0 ]; then
  if [ ${#apt_as[@]} -gt 0 ]; then
    say "installing Debian packages for the browser test: ${want_apt[*]}"
    { [ ${#need_apt[@]} -gt 0 ] || "${apt_as[@]}" DEBIAN_FRONTEND=noninteractive apt-get update -qq; } &&
      "${apt_as[@]}" DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want_apt[@]}" >/dev/null ||
      say "could not install ${want_apt[*]}: the dashboard's browser test will skip"
  else
    say "no ${want_apt[*]} (and no root or passwordless sudo to install them): the dashboard's"
    say "browser test will skip; install them with: sudo apt-get install ${want_apt[*]}"
  fi
fi
# Debian starts the packaged broker as a service; ours runs as a private node and does not need it.

command -v cargo >/dev/null 2>&1 || { say "no Rust toolchain (cargo) on PATH: install one with rustup (https://rustup.rs)"; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "maturin>=1.9,<2"
# A module built before the wheel moved to abi3 (_core.cpython-3XX-*.so) would be imported
# before the _core.abi3.so built now (Python tries version-specific suffixes first).
rm -f python/volley/_core.cpython-*.so
say "building the Rust core (release) and installing volley with extras all,${EXTRAS:-test} ..."
# every extra (service, endpoint, postgres) plus $EXTRAS: test by default, test,bench for `make bench`
VIRTUAL_ENV="$PWD/$VENV" PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/maturin" develop --release --extras "all,${EXTRAS:-test}" -q
"$VENV/bin/python" -c 'import volley._core, volley; print("[setup] volley", volley.__version__, "with native core", volley._core.__version__)' >&2

# --- upstream endpoint worker for the interop test (tests/test_endpoint_upstream.py) -----------
# globus-compute-endpoint is a test-only reference peer: its own venv, so its pins never touch
# ours. Same interpreter as .venv (dill payloads need the same Python minor version).
UPSTREAM_VENV=${UPSTREAM_VENV:-.venv-upstream-ep}
UPSTREAM_EP_VERSION=4.19.0
if ! "$UPSTREAM_VENV/bin/python" -c "import globus_compute_endpoint as g, sys; sys.exit(g.__version__ != '$UPSTREAM_EP_VERSION')" >/dev/null 2>&1; then
  say "creating $UPSTREAM_VENV with globus-compute-endpoint==$UPSTREAM_EP_VERSION (interop tests only)"
  "$PY" -m venv "$UPSTREAM_VENV"
  "$UPSTREAM_VENV/bin/python" -m pip install -q --upgrade pip
  "$UPSTREAM_VENV/bin/python" -m pip install -q "globus-compute-endpoint==$UPSTREAM_EP_VERSION"
fi
# --- end of the upstream endpoint block ------------------------------------------------------------
