#!/usr/bin/env bash
# Regenerates the image's lock files from pyproject.toml, with the hash of every file PyPI has for each pinned release
# (so they install on any Python the base image may carry). Run after changing dependencies, then rebuild the image.
# Needs pip-tools (python3 -m pip install pip-tools), a development tool: the image never installs it.
set -euo pipefail
cd "$(dirname "$0")/../.."
compile=(pip-compile --quiet --generate-hashes --index-url https://pypi.org/simple --no-emit-index-url)
# what the webhook runs with
PIP_CONFIG_FILE=/dev/null "${compile[@]}" --strip-extras --output-file deploy/image/requirements.txt pyproject.toml
# what builds the project's own wheel (pyproject.toml's build-system.requires)
PIP_CONFIG_FILE=/dev/null "${compile[@]}" --strip-extras --allow-unsafe --all-build-deps --only-build-deps \
    --output-file deploy/image/build-requirements.txt pyproject.toml
