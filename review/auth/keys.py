"""Keys derived from the service's secret, one per purpose, so no two uses share a key.

The secret (``VISION_REVIEW_SECRET``) never signs anything itself: cookie signing and the
audit chain each get their own key through HKDF-SHA256 (RFC 5869) with a purpose label. A
leaked cookie key therefore says nothing about the audit key and the reverse. The audit key
may instead come from a dedicated key file (``VISION_REVIEW_AUDIT_KEY_FILE``), so the
cookie secret can be rotated without breaking the audit chain's verification.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

from vision.errors import ConfigError

#: Purpose labels (HKDF "info"). Changing one changes every key derived for that purpose.
COOKIE_PURPOSE = b"vision-review/cookie-signing/v1"
AUDIT_PURPOSE = b"vision-review/audit-chain/v1"

#: A key file must hold at least this many bytes of key material.
MIN_KEY_FILE_BYTES = 32


def hkdf_sha256(key_material: bytes, info: bytes, salt: bytes = b"", length: int = 32) -> bytes:
    """HKDF with SHA-256 (RFC 5869): extract a pseudo-random key, then expand it for ``info``."""
    prk = hmac.new(salt or bytes(32), key_material, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def derive_key(secret: str | bytes, purpose: bytes) -> bytes:
    """The 32-byte key for ``purpose`` derived from ``secret``."""
    material = secret.encode() if isinstance(secret, str) else secret
    return hkdf_sha256(material, purpose)


def read_key_file(path: Path) -> bytes:
    """Key material from a dedicated key file (owner-only, at least 32 bytes).

    Raises:
        ConfigError: the file is missing, readable by others, or too short.
    """
    try:
        st = path.stat()
        material = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the audit key file {path}: {exc.strerror or exc}") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"the audit key file {path} is readable by others: run `chmod 600 {path}`")
    if len(material) < MIN_KEY_FILE_BYTES:
        raise ConfigError(
            f"the audit key file {path} holds {len(material)} bytes; it needs at least {MIN_KEY_FILE_BYTES}: "
            f"`python -c 'import secrets; print(secrets.token_urlsafe(48))' > {path}`"
        )
    return material


def audit_key(secret: str, key_file: Path | None) -> bytes:
    """The audit chain's key: from ``key_file`` when given, else derived from ``secret``.

    Raises:
        ConfigError: the key file is unusable, or the secret is missing or weak.
    """
    if key_file is not None:
        return derive_key(read_key_file(key_file), AUDIT_PURPOSE)
    from review.settings import check_secret

    check_secret(secret)
    return derive_key(secret, AUDIT_PURPOSE)


def audit_key_from_env() -> bytes | None:
    """The audit key from the environment, or ``None`` when neither variable is set.

    Raises:
        ConfigError: a variable is set but unusable (weak secret, bad key file).
    """
    key_file = os.environ.get("VISION_REVIEW_AUDIT_KEY_FILE", "").strip()
    secret = os.environ.get("VISION_REVIEW_SECRET", "")
    if not key_file and not secret:
        return None
    return audit_key(secret, Path(key_file).expanduser() if key_file else None)
