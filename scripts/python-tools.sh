#!/usr/bin/env bash
# Creates .venv (in the repo, git-ignored) with the pinned Python tools of requirements-ci.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.requirements-ci.txt
if [ ! -x .venv/bin/python ] || ! cmp -s requirements-ci.txt "$stamp"; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements-ci.txt
  cp requirements-ci.txt "$stamp"
fi
