# The restore-rules admission webhook: gunicorn over TLS, as a non-root user on a read-only root filesystem.
#   docker build -t kvbackup-webhook:0.1.0 .
# Pinned base: one exact Python release on one exact Debian release (pin the digest too in your registry mirror).
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# only what the package is built from (.dockerignore keeps everything else out of the context)
COPY pyproject.toml README.md ./
COPY kubectl_kvbackup ./kubectl_kvbackup
COPY webhook ./webhook
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --no-compile /wheels/*.whl && rm -rf /wheels \
    && groupadd --system --gid 65532 kvbackup \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin kvbackup
USER 65532:65532
EXPOSE 8443
# tls.crt and tls.key are mounted here from the Secret; /tmp is a memory volume (the root filesystem is read-only)
ENV KVBACKUP_WEBHOOK_CERT_DIR=/etc/kvbackup-webhook/tls KVBACKUP_WEBHOOK_TMP_DIR=/tmp
ENTRYPOINT ["kvbackup-webhook"]
