#!/usr/bin/env bash
# Elastic Beanstalk runs this in the extracted source bundle (/var/app/staging), before it
# installs requirements.txt and long before it starts the Procfile's processes. It makes
# the Heroku-shaped repository what the Python platform expects:
# 1. requirements.txt from uv.lock (the platform installs with pip; Mercato locks with uv):
#    the locked runtime dependencies, without the dev groups, and the project itself (`.`),
#    which gives the processes the `mercato` command;
# 2. the root Procfile without its `release` line: Beanstalk runs every line as a process
#    it keeps alive, so `mercato migrate` would run again and again; migrations run once
#    per deployment from .ebextensions/mercato.config instead.
set -euo pipefail

if [[ ! -f requirements.txt ]]; then
    uv=$(command -v uv || true)
    if [[ -z "$uv" ]]; then
        python3 -m venv /tmp/mercato-uv
        /tmp/mercato-uv/bin/python -m pip install --quiet --disable-pip-version-check uv
        uv=/tmp/mercato-uv/bin/uv
    fi
    "$uv" export --frozen --no-default-groups --no-editable --no-hashes --no-header \
        --format requirements-txt --output-file requirements.txt
fi

sed -i '/^release:/d' Procfile
