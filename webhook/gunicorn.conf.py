"""gunicorn settings of the webhook: TLS from a mounted Secret, reloaded on rotation; workers from the environment.

Run as ``kvbackup-webhook`` (or ``gunicorn -c webhook/gunicorn.conf.py``). Environment:
KVBACKUP_WEBHOOK_CERT_DIR (tls.crt, tls.key; default /etc/kvbackup-webhook/tls), KVBACKUP_WEBHOOK_BIND
(admission and health probes; default 0.0.0.0:8443; ``fd://N`` for an inherited socket),
KVBACKUP_WEBHOOK_METRICS_BIND (``/metrics`` only, same certificate; default 0.0.0.0:9443),
KVBACKUP_WEBHOOK_WORKERS (default 2), KVBACKUP_WEBHOOK_THREADS (per worker, default 16),
KVBACKUP_WEBHOOK_IO_TIMEOUT (seconds a client may stall a handshake or a read, default 5).
"""

import logging
import os
import ssl
import threading
import time

from gunicorn import sock as gunicorn_sock

from kvbackup_webhook import identity_index, metrics

_cert_dir = os.environ.get("KVBACKUP_WEBHOOK_CERT_DIR", "/etc/kvbackup-webhook/tls")

wsgi_app = "kvbackup_webhook:create_app()"
bind = [os.environ.get("KVBACKUP_WEBHOOK_BIND", "0.0.0.0:8443"),
        os.environ.get("KVBACKUP_WEBHOOK_METRICS_BIND", "0.0.0.0:9443")]
workers = int(os.environ.get("KVBACKUP_WEBHOOK_WORKERS", "2"))
# Threads overlap the short cluster lookups of one request with the work of others, and are many so that clients
# stalling a handshake or a body (each held at most IO_TIMEOUT) cannot take every thread from the health probes and
# the API server. A thread waiting on a socket costs no CPU and little memory.
worker_class = "gthread"
threads = int(os.environ.get("KVBACKUP_WEBHOOK_THREADS", "16"))
# kube-apiserver keeps connections to webhooks open: reusing them saves a TLS handshake per request.
keepalive = 30
timeout = 30
graceful_timeout = 20
certfile = os.path.join(_cert_dir, "tls.crt")
keyfile = os.path.join(_cert_dir, "tls.key")
# TLS 1.2 with forward secrecy and AEAD only (no CBC suites); TLS 1.3's suites are all AEAD and always on.
ciphers = "ECDHE+AESGCM:ECDHE+CHACHA20"
accesslog = None
errorlog = "-"
loglevel = os.environ.get("KVBACKUP_WEBHOOK_LOG_LEVEL", "info")
# The image's root filesystem is read-only: heartbeat files go to the memory-backed /tmp volume (or /dev/shm).
worker_tmp_dir = os.environ.get("KVBACKUP_WEBHOOK_TMP_DIR") or None

#: seconds a client may stall one read or write, the TLS handshake included
IO_TIMEOUT = float(os.environ.get("KVBACKUP_WEBHOOK_IO_TIMEOUT", "5"))
#: seconds for a whole request, read to answer, however slowly its bytes trickle in (lookups end after 3.5 s)
REQUEST_LIMIT = 3 * IO_TIMEOUT


class _BoundedSSLSocket(ssl.SSLSocket):
    """A TLS connection whose blocking operations give up: gunicorn's gthread worker makes sockets blocking (no
    timeout) for the handshake and the request, so a client that sends a ClientHello or a Content-Length and then
    nothing would hold a worker thread for good. Here "blocking" means: each read at most IO_TIMEOUT, and all of a
    request within REQUEST_LIMIT of its start."""

    _deadline = 0.0

    def settimeout(self, value: float | None) -> None:
        if value is None:
            self._deadline = time.monotonic() + REQUEST_LIMIT
            value = IO_TIMEOUT
        super().settimeout(value)

    def setblocking(self, flag: bool) -> None:
        self.settimeout(None if flag else 0.0)

    def _bounded(self) -> None:
        if self.gettimeout() == 0.0:
            return
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the client took too long over its request")
        super().settimeout(min(IO_TIMEOUT, left))

    def do_handshake(self, *args, **kwargs):
        self._bounded()
        return super().do_handshake(*args, **kwargs)

    def recv(self, *args, **kwargs):
        self._bounded()
        return super().recv(*args, **kwargs)

    def recv_into(self, *args, **kwargs):
        self._bounded()
        return super().recv_into(*args, **kwargs)


class _ReloadingContext:
    """One SSLContext per certificate generation. gunicorn asks for a context on every accepted connection, so
    checking the files' identity there picks up a rotated Secret on the next connection; connections already open
    keep the context they were accepted with, so no request is dropped. Kubernetes swaps a Secret volume's files
    atomically (a symlink flip), so certificate and key always change together; if they are read mid-change, or a
    path dangles for a moment, the loaded context stays in use and the next connection tries again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stamp: tuple = ()
        self._context: ssl.SSLContext | None = None

    @staticmethod
    def _identity(path: str) -> tuple:
        status = os.stat(path)  # follows the ..data symlink, so a swap changes inode and mtime
        return status.st_ino, status.st_mtime_ns, status.st_size

    def __call__(self, conf, default_factory) -> ssl.SSLContext:
        with self._lock:
            try:
                stamp = (self._identity(conf.certfile), self._identity(conf.keyfile))
                if stamp != self._stamp or self._context is None:
                    context = default_factory()
                    context.minimum_version = ssl.TLSVersion.TLSv1_2
                    context.sslsocket_class = _BoundedSSLSocket
                    self._context, self._stamp = context, stamp
                    logging.getLogger("gunicorn.error").info("serving certificate loaded from %s", conf.certfile)
            except (ssl.SSLError, OSError) as error:
                if self._context is None:
                    raise
                logging.getLogger("gunicorn.error").warning("keeping the previous certificate: %s", error)
            return self._context


ssl_context = _ReloadingContext()


class _QuietTimeouts(logging.Filter):
    """A client that stalls is cut off, which gunicorn logs with a traceback; one line says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TimeoutError):
            record.msg, record.args, record.exc_info = "cut off a client that stalled: %s", (record.exc_info[1],), None
        return True


def on_starting(server) -> None:
    # Before the workers are forked: each gets its own slot of one block of shared memory, and they hold
    # identities in one store (a restarted worker finds the values held before)
    metrics.share_between_workers(server.cfg.workers)
    os.environ[identity_index.RESERVATIONS_ENV] = identity_index.create_store_file(worker_tmp_dir)


def on_exit(server) -> None:
    identity_index.remove_store_file(os.environ[identity_index.RESERVATIONS_ENV])


def pre_fork(server, worker) -> None:
    worker.metrics_slot = metrics.slot_for(w.metrics_slot for w in server.WORKERS.values())
    # marked before the fork, so a worker that has not started yet already holds up the pod's readiness
    metrics.expect_worker(worker.metrics_slot)


def child_exit(server, worker) -> None:
    metrics.worker_gone(worker.metrics_slot)


def post_fork(server, worker) -> None:
    # the certificate is loaded now rather than on the first connection, which may come while a Secret swap leaves
    # the paths dangling for a moment
    gunicorn_sock.ssl_context(worker.cfg)
    metrics.use_slot(worker.metrics_slot)
    # the app serves /metrics on the second listener only, /mutate on the first only (see create_app)
    os.environ["KVBACKUP_WEBHOOK_METRICS_PORT"] = str(worker.sockets[1].getsockname()[1])
    worker.log.error_log.addFilter(_QuietTimeouts())
