#!/usr/bin/env bash
# Builds the webhook image from the Dockerfile with buildah (no container engine needed) and smoke-tests it: the
# image runs as uid 65532 on a read-only root with a memory /tmp and a mounted serving certificate, as the
# Deployment runs it, and must answer /healthz, /readyz and an AdmissionReview over TLS on 127.0.0.1.
#
#   deploy/image/build-and-smoke.sh            # as root; needs buildah, mmdebstrap, unshare, and python3 with
#                                              # kubectl_kvbackup importable (the project's venv)
# Environment:
#   PYTHON_IMAGE   a base image buildah can pull (default: a stand-in made here, see below)
#   PYTHON         the interpreter for certificates and checks (default: python3)
#   KEEP_IMAGE=1   leave the build storage (printed) instead of removing it
#
# Where no registry can be reached, the base is a stand-in: a Debian bookworm root filesystem with python3, its venv
# module and `python` on PATH, made by mmdebstrap from the machine's Debian mirror and imported FROM scratch. The
# host's CA bundle is mounted into the build steps, so pip reaches the package index through a proxy that has its own
# CA. Everything (storage, certificates, root filesystem) lives in one temporary folder, removed at the end.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d /tmp/kvbackup-image.XXXXXX)"
buildah=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
server_pid=""
container=""
started=$SECONDS

log() { printf '== %s (%ss)\n' "$*" "$((SECONDS - started))" >&2; }

# unshare ignores SIGTERM while it waits for its child: stop gunicorn (PID 1 of the namespace) as kubelet would,
# with SIGTERM, and SIGKILL unshare after the grace period (--kill-child then takes the whole namespace down)
stop_server() {
    local master
    master="$(ps -o pid= --ppid "$server_pid" | tr -d ' ')"
    if [ -n "$master" ]; then
        kill -TERM "$master" 2>/dev/null || true
    fi
    for _ in $(seq 60); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

cleanup() {
    if [ -n "$server_pid" ]; then
        stop_server
        cat "$work/server.log" >&2
    fi
    if [ -n "$container" ]; then
        "${buildah[@]}" umount "$container" >/dev/null 2>&1 || true
        "${buildah[@]}" rm "$container" >/dev/null 2>&1 || true
    fi
    if [ "${KEEP_IMAGE:-}" = 1 ]; then
        echo "build storage kept in $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

if [ "$(id -u)" != 0 ]; then
    echo "error: $0 mounts the image's root filesystem and must run as root" >&2
    exit 1
fi

base="${PYTHON_IMAGE:-}"
if [ -z "$base" ]; then
    log "stand-in base image: Debian bookworm with python3 (mmdebstrap)"
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates,passwd \
        --format=tar bookworm "$work/rootfs.tar"
    mkdir "$work/base"
    mv "$work/rootfs.tar" "$work/base/"
    printf 'FROM scratch\nADD rootfs.tar /\nCMD ["python"]\n' > "$work/base/Containerfile"
    "${buildah[@]}" build --quiet --isolation chroot --layers=false -f "$work/base/Containerfile" \
        -t localhost/kvbackup-python-base:bookworm "$work/base" >/dev/null
    rm -rf "$work/base"
    base=localhost/kvbackup-python-base:bookworm
fi

log "image build from $base"
ca_bundle=/etc/ssl/certs/ca-certificates.crt
cert_args=()
if [ -r "$ca_bundle" ]; then
    cert_args=(-v "$(dirname "$ca_bundle"):/run/host-certs:ro" --build-arg "PIP_CERT=/run/host-certs/$(basename "$ca_bundle")")
fi
"${buildah[@]}" build --quiet --isolation chroot --layers=false --pull=missing \
    --build-arg "PYTHON_IMAGE=$base" "${cert_args[@]}" -f "$repo/Dockerfile" -t localhost/kvbackup-webhook:smoke "$repo"

log "run as the image says, read-only, on 127.0.0.1"
container="$("${buildah[@]}" from --pull=never localhost/kvbackup-webhook:smoke)"
root="$("${buildah[@]}" mount "$container")"
"${buildah[@]}" inspect --type image localhost/kvbackup-webhook:smoke > "$work/image.json"
mkdir -m 0750 "$work/tls"
ports="$("$python" - "$work/tls" <<'EOF'
import os, socket, sys
from kubectl_kvbackup import certs

folder = sys.argv[1]
material = certs.issue(["localhost"], ("127.0.0.1",))
for name, data in (("ca.crt", material.ca_pem), ("tls.crt", material.cert_pem), ("tls.key", material.key_pem)):
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    os.chown(path, 0, 65532)  # as the Secret volume with fsGroup: readable by the webhook's group, by nobody else
    os.chmod(path, 0o440)
os.chown(folder, 0, 65532)
ports = []
for _ in range(2):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        ports.append(str(s.getsockname()[1]))
print(" ".join(ports))
EOF
)"
read -r port metrics_port <<<"$ports"
# the image's own user, entry point and environment; only the addresses change (loopback, free ports)
mapfile -t launch < <("$python" - "$work/image.json" "$port" "$metrics_port" <<'EOF'
import json, sys
with open(sys.argv[1]) as f:
    config = json.load(f)["OCIv1"]["config"]
print(config.get("User", ""))
print(json.dumps((config.get("Entrypoint") or []) + (config.get("Cmd") or [])))
for item in config.get("Env") or []:
    print(item)
print(f"KVBACKUP_WEBHOOK_BIND=127.0.0.1:{sys.argv[2]}")
print(f"KVBACKUP_WEBHOOK_METRICS_BIND=127.0.0.1:{sys.argv[3]}")
# no cluster here: the identity index cannot sync, so the webhook serves at once and says so (in a pod, /readyz
# waits for the sync up to this timeout)
print("KVBACKUP_WEBHOOK_INDEX_SYNC_TIMEOUT=0")
EOF
)
user="${launch[0]}"
mapfile -t command < <("$python" -c 'import json, sys; print(*json.loads(sys.argv[1]), sep="\n")' "${launch[1]}")
environment=("${launch[@]:2}")
case "${user%%:*}" in
    "" | 0 | root) echo "error: the image runs as root (USER ${user:-unset})" >&2; exit 1 ;;
esac

# A mount and PID namespace of its own: the image's root bind-mounted read-only, a memory /tmp, the certificate
# read-only where the Secret goes, and the few devices (and /dev/shm) a container runtime provides; the host's network, so the
# server is reachable on 127.0.0.1. Killing unshare kills everything in the namespace.
unshare --mount --pid --fork --kill-child --propagation private bash -euo pipefail -c '
    root="$1" tls="$2" user="$3"; shift 3
    mount --bind "$root" "$root"
    mount -o remount,bind,ro "$root"
    mount -t tmpfs -o size=16m,mode=1777,nosuid,nodev tmpfs "$root/tmp"
    mount -t tmpfs -o size=64k,mode=0755,nosuid tmpfs "$root/dev"
    for device in null zero random urandom; do touch "$root/dev/$device"; mount --bind "/dev/$device" "$root/dev/$device"; done
    mkdir "$root/dev/shm"
    mount -t tmpfs -o size=64m,mode=1777,nosuid,nodev shm "$root/dev/shm"
    mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
    mount --bind -o ro "$tls" "$root/etc/kvbackup-webhook/tls"
    exec chroot --userspec="$user" "$root" /usr/bin/env -i "$@"
' smoke "$root" "$work/tls" "$user" "${environment[@]}" "${command[@]}" > "$work/server.log" 2>&1 &
server_pid=$!

log "checks: /healthz, /readyz, one AdmissionReview"
"$python" - "$port" "$work/tls/ca.crt" <<'EOF'
import base64, http.client, json, ssl, sys, time

port, ca = int(sys.argv[1]), sys.argv[2]
context = ssl.create_default_context(cafile=ca)


def call(method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


started = time.monotonic()


def passed(what: str) -> None:
    print(f"smoke: {what} ({time.monotonic() - started:.1f}s)", file=sys.stderr, flush=True)


deadline = time.monotonic() + 60
while True:
    try:
        status, body = call("GET", "/healthz")
        break
    except (OSError, http.client.HTTPException) as error:
        if time.monotonic() > deadline:
            sys.exit(f"smoke: the webhook did not answer on 127.0.0.1:{port} within 60 s: {error}")
        time.sleep(0.5)
assert (status, body) == (200, b"ok\n"), ("/healthz", status, body)
passed("/healthz")
status, body = call("GET", "/readyz")
assert status == 200 and body.startswith(b"ok, but the identity index"), ("/readyz", status, body)
passed("/readyz")
review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
    "uid": "0f3c2b8e-smoke", "operation": "CREATE", "namespace": "demo", "name": "disk",
    "kind": {"group": "cdi.kubevirt.io", "version": "v1beta1", "kind": "DataVolume"},
    "resource": {"group": "cdi.kubevirt.io", "version": "v1beta1", "resource": "datavolumes"},
    "userInfo": {"username": "system:serviceaccount:velero:velero"},
    "object": {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
               "metadata": {"name": "disk", "namespace": "demo", "labels": {"velero.io/restore-name": "r1"}},
               "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "1Gi"}}}},
               "status": {"phase": "Succeeded"}}}}
status, body = call("POST", "/mutate", json.dumps(review).encode())
answer = json.loads(body)["response"]
assert status == 200 and answer["uid"] == "0f3c2b8e-smoke" and answer["allowed"] is True, (status, body)
# a DataVolume restored after its import succeeded is marked prePopulated, so CDI does not import over it again
assert answer.get("patchType") == "JSONPatch" and b"storage.prePopulated" in base64.b64decode(answer["patch"]), answer
passed("/mutate patched a restored DataVolume")
EOF
master="$(ps -o pid= --ppid "$server_pid" | tr -d ' ')"
uids="$(ps -o uid= -p "$master" --ppid "$master" | tr -d ' ' | sort -u | tr '\n' ' ')"
if [ "$uids" != "${user%%:*} " ]; then
    echo "error: the webhook's processes run as uid ${uids}instead of the image's user ${user%%:*}" >&2
    exit 1
fi
stop_server
cat "$work/server.log" >&2
# the server must not have logged an error (such as gunicorn's control socket on a read-only root without home)
if grep -F "[ERROR]" "$work/server.log" >/dev/null; then
    echo "error: the webhook logged errors (above)" >&2
    exit 1
fi
log "image smoke test passed"
