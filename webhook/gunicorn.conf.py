"""gunicorn settings of the webhook: TLS from a mounted Secret, reloaded on rotation; workers from the environment.

Run as ``kvbackup-webhook`` (or ``gunicorn -c webhook/gunicorn.conf.py``). Environment:
KVBACKUP_WEBHOOK_CERT_DIR (tls.crt, tls.key; default /etc/kvbackup-webhook/tls), KVBACKUP_WEBHOOK_BIND
(default 0.0.0.0:8443; ``fd://N`` for an inherited socket), KVBACKUP_WEBHOOK_WORKERS (default 2),
KVBACKUP_WEBHOOK_THREADS (per worker, default 4).
"""

import logging
import os
import ssl
import threading

from kvbackup_webhook import identity_index, metrics

_cert_dir = os.environ.get("KVBACKUP_WEBHOOK_CERT_DIR", "/etc/kvbackup-webhook/tls")

wsgi_app = "kvbackup_webhook:create_app()"
bind = [os.environ.get("KVBACKUP_WEBHOOK_BIND", "0.0.0.0:8443")]
workers = int(os.environ.get("KVBACKUP_WEBHOOK_WORKERS", "2"))
# Threads overlap the short cluster lookups of one request with the work of others.
worker_class = "gthread"
threads = int(os.environ.get("KVBACKUP_WEBHOOK_THREADS", "4"))
# kube-apiserver keeps connections to webhooks open: reusing them saves a TLS handshake per request.
keepalive = 30
timeout = 30
graceful_timeout = 20
certfile = os.path.join(_cert_dir, "tls.crt")
keyfile = os.path.join(_cert_dir, "tls.key")
accesslog = None
errorlog = "-"
loglevel = os.environ.get("KVBACKUP_WEBHOOK_LOG_LEVEL", "info")
# The image's root filesystem is read-only: heartbeat files go to the memory-backed /tmp volume (or /dev/shm).
worker_tmp_dir = os.environ.get("KVBACKUP_WEBHOOK_TMP_DIR") or None


class _ReloadingContext:
    """One SSLContext per certificate generation. gunicorn asks for a context on every accepted connection, so
    checking the files' identity there picks up a rotated Secret on the next connection; connections already open
    keep the context they were accepted with, so no request is dropped. Kubernetes swaps a Secret volume's files
    atomically (a symlink flip), so certificate and key always change together; if they are read mid-change the old
    context stays in use and the next connection tries again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stamp: tuple = ()
        self._context: ssl.SSLContext | None = None

    @staticmethod
    def _identity(path: str) -> tuple:
        status = os.stat(path)  # follows the ..data symlink, so a swap changes inode and mtime
        return status.st_ino, status.st_mtime_ns, status.st_size

    def __call__(self, conf, default_factory) -> ssl.SSLContext:
        stamp = (self._identity(conf.certfile), self._identity(conf.keyfile))
        with self._lock:
            if stamp != self._stamp or self._context is None:
                try:
                    context = default_factory()
                except (ssl.SSLError, OSError) as error:
                    if self._context is None:
                        raise
                    logging.getLogger("gunicorn.error").warning("keeping the previous certificate: %s", error)
                else:
                    context.minimum_version = ssl.TLSVersion.TLSv1_2
                    self._context, self._stamp = context, stamp
                    logging.getLogger("gunicorn.error").info("serving certificate loaded from %s", conf.certfile)
            return self._context


ssl_context = _ReloadingContext()


def on_starting(server) -> None:
    # Before the workers are forked: they all count into one block of shared memory, and hold identities in one
    # store (a restarted worker finds the values held before)
    metrics.share_between_workers()
    os.environ[identity_index.RESERVATIONS_ENV] = identity_index.create_store_file(worker_tmp_dir)


def on_exit(server) -> None:
    identity_index.remove_store_file(os.environ[identity_index.RESERVATIONS_ENV])
