# The restore-rules admission webhook: gunicorn over TLS, as a non-root user on a read-only root filesystem.
#   docker build -t kvbackup-webhook:0.1.0 .
# The base: one exact Python release on one exact Debian release. Pin its digest as well where your registry (or
# mirror) serves one: --build-arg PYTHON_IMAGE=python:3.12.8-slim-bookworm@sha256:<digest of your mirror's copy>.
# Any Debian-based image with python (3.10 or newer, with its venv module) on PATH works: deploy/image/build-and-smoke.sh
# builds with a local Debian root filesystem where no registry can be reached.
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Where the package index is reached through a proxy with its own CA: the CA bundle's path inside the build (mount it
# there, e.g. buildah build -v /etc/ssl/certs:/run/host-certs:ro --build-arg PIP_CERT=/run/host-certs/ca-certificates.crt)
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Every third-party file is pinned by hash (deploy/image/*.txt, made by deploy/image/lock.sh): a changed or
# substituted release fails the build.
COPY deploy/image/requirements.txt deploy/image/build-requirements.txt ./
RUN python -m venv /opt/build \
    && /opt/build/bin/python -m pip install --require-hashes --no-deps -r build-requirements.txt \
    && python -m venv /opt/kvbackup \
    && /opt/kvbackup/bin/python -m pip install --require-hashes --no-deps -r requirements.txt
# only what the package is built from (.dockerignore keeps everything else out of the context)
COPY pyproject.toml README.md ./
COPY kubectl_kvbackup ./kubectl_kvbackup
COPY webhook ./webhook
# the project's own wheel, built offline with the pinned setuptools; then the installer leaves the runtime
RUN /opt/build/bin/python -m pip wheel --no-deps --no-build-isolation --no-index --wheel-dir /wheels . \
    && /opt/kvbackup/bin/python -m pip install --no-deps --no-index /wheels/*.whl \
    && /opt/kvbackup/bin/python -m pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/kvbackup /opt/kvbackup
# a system user with no home (/nonexistent) and no shell; the TLS Secret's mount point exists in the image
RUN groupadd --system --gid 65532 kvbackup \
    && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin kvbackup \
    && mkdir -p /etc/kvbackup-webhook/tls
USER 65532:65532
ENV PATH=/opt/kvbackup/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    KVBACKUP_WEBHOOK_CERT_DIR=/etc/kvbackup-webhook/tls KVBACKUP_WEBHOOK_TMP_DIR=/tmp
# admission (and probes) on 8443, metrics on 9443; tls.crt and tls.key are mounted from the Secret, /tmp is a memory
# volume (the root filesystem is read-only)
EXPOSE 8443 9443
# gunicorn's control socket (runtime worker management) is off: nothing in the pod needs it, it would let anything
# there resize or stop the server, and it cannot be created on a read-only root without a home directory
ENTRYPOINT ["kvbackup-webhook", "--no-control-socket"]
