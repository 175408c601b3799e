"""Secret encryption in bundles: AES-256-GCM, one nonce per file, the file's bundle path as associated data
(so an encrypted file moved to another path in the bundle fails to decrypt)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import stat

from .cluster import KubeError

MAGIC = b"KVB1"
NONCE_BYTES = 12
ALGORITHM = "AES-256-GCM"
KEY_ENVIRONMENT = "KVBACKUP_ENCRYPTION_KEY"


class EncryptionError(KubeError):
    pass


def parse_key(text: bytes, where: str) -> bytes:
    """A 32-byte key given raw, as 64 hex digits, or as base64."""
    if len(text) == 32:
        return text
    stripped = text.strip()
    candidates = []
    try:
        candidates.append(bytes.fromhex(stripped.decode("ascii")))
    except (ValueError, UnicodeDecodeError):
        pass
    try:
        candidates.append(base64.b64decode(stripped, validate=True))
    except (ValueError, binascii.Error):
        pass
    for key in candidates:
        if len(key) == 32:
            return key
    raise EncryptionError(f"error: {where} does not hold a 256-bit key: give 32 raw bytes, 64 hex digits or base64 of 32 "
                    "bytes (e.g. `head -c 32 /dev/urandom > key`)")


def load_key(path: str | None, warn=None) -> bytes | None:
    """The key from ``--encrypt-key-file`` or ``KVBACKUP_ENCRYPTION_KEY``; None when neither is given."""
    if path:
        try:
            with open(path, "rb") as f:
                data = f.read()
            mode = os.stat(path).st_mode
        except OSError as error:
            raise EncryptionError(f"error: cannot read the key file {path}: {error.strerror}") from None
        if warn and mode & (stat.S_IRGRP | stat.S_IROTH):
            warn(f"warning: the key file {path} is readable by other users: chmod 600 {path}")
        return parse_key(data, path)
    text = os.environ.get(KEY_ENVIRONMENT)
    return parse_key(text.encode(), KEY_ENVIRONMENT) if text else None


def key_id(key: bytes) -> str:
    """Names the key in the index without revealing it, so restore can say which key it needs."""
    return hashlib.sha256(b"kvbackup-key-id" + key).hexdigest()[:16]


def encrypt(key: bytes, data: bytes, path: str) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # imported by the commands that encrypt only

    nonce = os.urandom(NONCE_BYTES)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, data, path.encode())


def decrypt(key: bytes, blob: bytes, path: str) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + NONCE_BYTES + 16:
        raise EncryptionError(f"error: cannot decrypt {path}: not a kvbackup encrypted file")
    nonce = blob[len(MAGIC):len(MAGIC) + NONCE_BYTES]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(MAGIC) + NONCE_BYTES:], path.encode())
    except InvalidTag:
        raise EncryptionError(f"error: cannot decrypt {path}: wrong key or tampered file") from None


MAC_ALGORITHM = "HMAC-SHA256"


def index_mac(key: bytes, index: dict) -> str:
    """Authenticates a bundle's index (and through its checksums, every file): without the key, an edited index
    cannot be made to verify. The index is canonicalised without its own ``integrity`` field."""
    body = json.dumps({k: v for k, v in index.items() if k != "integrity"}, sort_keys=True, separators=(",", ":"))
    mac_key = hashlib.sha256(b"kvbackup-index-mac" + key).digest()
    return hmac.new(mac_key, body.encode(), hashlib.sha256).hexdigest()


def index_authentic(key: bytes, index: dict) -> bool:
    given = (index.get("integrity") or {}).get("mac", "")
    return hmac.compare_digest(given, index_mac(key, index))
