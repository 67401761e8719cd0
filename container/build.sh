#!/usr/bin/env bash
# Build the s5vec container image without a Dockerfile or a registry: a Debian bookworm root
# file system from Debian's own packages (mmdebstrap), the s5vec and s5vec-client wheels of
# this checkout installed into /opt/s5vec, imported into podman as s5vec:<version>.
#   container/build.sh [TAG]          (needs root, mmdebstrap, podman; tests/test_container.py runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
VERSION=$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
TAG=${1:-s5vec:$VERSION}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"$PYTHON" -m build --quiet --wheel --outdir "$WORK/wheels" clients/python >/dev/null
"$PYTHON" -m build --quiet --wheel --outdir "$WORK/wheels" . >/dev/null
# Every dependency is fetched here, by the host's pip (its index, proxy and CAs), for the
# image's Python (bookworm: CPython 3.11); the build root installs them without a network.
"$PYTHON" -m pip download --quiet --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --dest "$WORK/wheels" \
  "$WORK/wheels/s5vec_client-$VERSION-py3-none-any.whl" "$WORK/wheels/s5vec-$VERSION-py3-none-any.whl" >/dev/null

mmdebstrap --quiet --variant=apt --include=python3,python3-venv,ca-certificates \
  --customize-hook='chroot "$1" python3 -m venv /opt/s5vec' \
  --customize-hook="copy-in $WORK/wheels /tmp" \
  --customize-hook="chroot \"\$1\" env -i PATH=/usr/bin:/bin /opt/s5vec/bin/pip install --quiet --no-cache-dir --no-index --find-links /tmp/wheels \
      --disable-pip-version-check s5vec==$VERSION" \
  --customize-hook="rm -rf \"\$1/tmp/wheels\" \"\$1\"/var/lib/apt/lists/* \"\$1\"/var/cache/apt/*" \
  --customize-hook='chroot "$1" useradd --system --home-dir /var/lib/s5vec --create-home --shell /usr/sbin/nologin s5vec' \
  bookworm "$WORK/rootfs.tar"

# Beyond loopback the daemon wants API keys: pass S5VEC_API_KEYS (podman run -e ...).
podman import --quiet \
  --change 'ENV PATH=/opt/s5vec/bin:/usr/local/bin:/usr/bin:/bin' \
  --change 'ENV S5VEC_HOST=0.0.0.0' \
  --change 'USER s5vec' \
  --change 'WORKDIR /var/lib/s5vec' \
  --change 'VOLUME /var/lib/s5vec' \
  --change 'EXPOSE 7533' \
  --change 'STOPSIGNAL SIGTERM' \
  --change 'CMD ["/opt/s5vec/bin/s5vec", "serve", "--data-dir", "/var/lib/s5vec/data"]' \
  "$WORK/rootfs.tar" "$TAG" >/dev/null
echo "$TAG"
