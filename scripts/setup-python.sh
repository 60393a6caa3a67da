#!/usr/bin/env bash
# Python side of simkvm: the package with every extra (libvirt-python, notebooks, dask, tests).
# libvirt-python compiles against libvirt-dev, which scripts/setup-system.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[all]'
