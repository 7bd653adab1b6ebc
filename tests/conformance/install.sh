#!/usr/bin/env bash
# Installs Autobahn|Testsuite (Python 2.7 only) into a virtualenv, once.
# Usage: tests/conformance/install.sh [VENV_DIR]   (default: /tmp/tether-autobahn)
set -euo pipefail
VENV=${1:-/tmp/tether-autobahn}
if [ -x "$VENV/bin/wstest" ]; then exit 0; fi
PY27=$(pyenv root 2>/dev/null || echo /root/.pyenv)/versions/2.7.18/bin/python
[ -x "$PY27" ] || { echo "Python 2.7.18 not found at $PY27 (pyenv)"; exit 1; }
"$PY27" -m pip install -q 'virtualenv<20.22' 2>&1 | grep -v -i "deprecat\|warning" || true
"$PY27" -m virtualenv -q "$VENV"
"$VENV/bin/pip" install -q autobahntestsuite==25.10.1 txaio==2.1.0 incremental==16.10.1 \
  pyOpenSSL==19.1.0 cryptography==3.3.2 Twisted==19.10.0 zope.interface==4.6.0 jinja2==2.11.3 \
  markupsafe==1.1.1 Werkzeug==1.0.1 klein==17.10.0 service_identity==18.1.0 unittest2==1.1.0 \
  six==1.16.0 'autobahn[accelerate,twisted]==0.10.9' 2>&1 | grep -v -i "deprecat\|warning" || true
"$VENV/bin/wstest" --help >/dev/null
