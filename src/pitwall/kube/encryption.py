"""Encryption at rest of stored objects, as kube-apiserver's ``--encryption-provider-config`` does it.

An ``EncryptionConfiguration`` (``apiserver.config.k8s.io/v1``) lists, per
group of resources, providers in order: the first encrypts every write, all
of them decrypt. A stored value names what sealed it with a prefix,
``k8s:enc:<provider>:v1:<key name>:`` followed by the provider's bytes:

- ``aesgcm``: a 12-byte random nonce, then AES-GCM ciphertext and tag; the
  object's store key is the authenticated data (a value moved to another
  key does not open);
- ``aescbc``: a 16-byte random IV, then AES-CBC ciphertext (PKCS#7 padded);
- ``secretbox``: a 24-byte random nonce, then XSalsa20-Poly1305 (NaCl);
- ``identity``: the plain JSON, no prefix.

Values no prefix matches (written before encryption was turned on) read as
plain only where ``identity`` is listed, as upstream. A read with no
working key raises ``DecryptError``; the API answers it with a 500
``InternalError``, never with the undecrypted bytes. Key rotation: list the
new key first, keep the old one after it, then rewrite every object (a
write of an object sealed by any but the first provider is never skipped as
a no-op).
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pitwall.core.errors import ConfigError

__all__ = ["ENC_PREFIX", "KEY_ENV", "DecryptError", "Encryption", "EncryptionConfigError", "load_encryption",
           "local_encryption", "parse_config"]

ENC_PREFIX = b"k8s:enc:"
KEY_ENV = "PITWALL_SECRETS_KEY"
_MAX_CONFIG = 1 << 20


class EncryptionConfigError(ConfigError):
    """The encryption configuration is unusable; the message names the setting (``kube.encryption_config``
    and the path inside the file, or ``PITWALL_SECRETS_KEY``)."""


class DecryptError(Exception):
    """A stored value that no configured provider opens."""


class _Provider(Protocol):
    prefix: bytes

    def seal(self, data: bytes, aad: bytes) -> bytes: ...

    def open(self, data: bytes, aad: bytes) -> bytes: ...


class _Identity:
    prefix = b""

    def seal(self, data: bytes, aad: bytes) -> bytes:
        return data

    def open(self, data: bytes, aad: bytes) -> bytes:
        if data.startswith(ENC_PREFIX):
            raise DecryptError("identity transformer tried to read encrypted data")
        return data


class _AESGCM:
    def __init__(self, name: str, key: bytes) -> None:
        self.prefix = b"k8s:enc:aesgcm:v1:" + name.encode() + b":"
        self._aead = AESGCM(key)

    def seal(self, data: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data, aad or None)

    def open(self, data: bytes, aad: bytes) -> bytes:
        if len(data) < 12 + 16:
            raise DecryptError("the stored data was shorter than the required size")
        try:
            return self._aead.decrypt(data[:12], data[12:], aad or None)
        except Exception:  # cryptography's InvalidTag says nothing more
            raise DecryptError("cipher: message authentication failed") from None


class _AESCBC:
    def __init__(self, name: str, key: bytes) -> None:
        self.prefix = b"k8s:enc:aescbc:v1:" + name.encode() + b":"
        self._key = key

    def seal(self, data: bytes, aad: bytes) -> bytes:
        iv = os.urandom(16)
        padder = padding.PKCS7(128).padder()
        enc = Cipher(algorithms.AES(self._key), modes.CBC(iv)).encryptor()
        return iv + enc.update(padder.update(data) + padder.finalize()) + enc.finalize()

    def open(self, data: bytes, aad: bytes) -> bytes:
        if len(data) < 32 or len(data) % 16:
            raise DecryptError("the stored data is not a multiple of the block size")
        dec = Cipher(algorithms.AES(self._key), modes.CBC(data[:16])).decryptor()
        padded = dec.update(data[16:]) + dec.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            return unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            raise DecryptError("invalid padding on input") from None


class _Secretbox:
    def __init__(self, name: str, key: bytes) -> None:
        from nacl.secret import SecretBox

        self.prefix = b"k8s:enc:secretbox:v1:" + name.encode() + b":"
        self._box = SecretBox(key)

    def seal(self, data: bytes, aad: bytes) -> bytes:
        return bytes(self._box.encrypt(data))  # nonce (24 bytes) + tag + ciphertext, as Go's secretbox.Seal

    def open(self, data: bytes, aad: bytes) -> bytes:
        from nacl.exceptions import CryptoError

        if len(data) < 24 + 16:
            raise DecryptError("the stored data was shorter than the required size")
        try:
            return bytes(self._box.decrypt(data[24:], data[:24]))
        except CryptoError:
            raise DecryptError("output array too small or failed to decrypt") from None


@dataclass(frozen=True)
class _Rule:
    """One ``resources[]`` entry: which resources, and their providers (first seals)."""

    patterns: tuple[str, ...]
    providers: tuple[_Provider, ...]

    def matches(self, group: str, plural: str) -> bool:
        for p in self.patterns:
            name, _, grp = p.partition(".")
            if p in ("*.*", f"*.{group}") or (name == plural and grp == group):
                return True
            if p == "*." and group == "":
                return True
        return False


class Encryption:
    """The configured providers per resource; ``seal``/``unseal`` values of one resource's store keys."""

    def __init__(self, rules: Sequence[_Rule], source: str) -> None:
        self.rules = tuple(rules)
        self.source = source  # where the keys came from, for the docs and the log

    def _rule(self, group: str, plural: str) -> _Rule | None:
        return next((r for r in self.rules if r.matches(group, plural)), None)

    def encrypts(self, group: str, plural: str) -> bool:
        """Whether writes of this resource are sealed by a provider other than identity."""
        r = self._rule(group, plural)
        return r is not None and bool(r.providers[0].prefix)

    def seal(self, group: str, plural: str, key: str, data: bytes) -> bytes:
        """The stored form of ``data`` (an object's JSON) at store key ``key``."""
        r = self._rule(group, plural)
        if r is None:
            return data
        first = r.providers[0]
        return first.prefix + first.seal(data, key.encode())

    def unseal(self, group: str, plural: str, key: str, data: bytes) -> tuple[bytes, bool]:
        """``(plain JSON, stale)``: stale when a provider other than the first sealed it (rewrite it)."""
        r = self._rule(group, plural)
        if r is None:
            return _Identity().open(data, b""), False
        return _unseal(r.providers, key, data)

    def encrypt(self, data: bytes) -> bytes:
        """``data`` sealed as a Secret's value is (no store key bound): for other records of Secret values."""
        return self.seal("", "secrets", "", data)

    def decrypt(self, data: bytes) -> bytes:
        """The inverse of ``encrypt`` (any configured key); raises ``DecryptError`` when none opens it."""
        return self.unseal_any("", data)

    def unseal_any(self, key: str, data: bytes) -> bytes:
        """The plain value, trying every configured provider: for readers that do not know the resource."""
        if not data.startswith(ENC_PREFIX):
            return data
        return _unseal([p for r in self.rules for p in r.providers if p.prefix], key, data)[0]


def _unseal(providers: Sequence[_Provider], key: str, data: bytes) -> tuple[bytes, bool]:
    errors: list[str] = []
    for i, p in enumerate(providers):
        if not data.startswith(p.prefix):
            continue
        try:
            return p.open(data[len(p.prefix):], key.encode()), i != 0
        except DecryptError as e:
            if p.prefix:  # identity's refusal of sealed data is no error while another provider may match
                errors.append(str(e))
    if errors:
        raise DecryptError(errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")
    raise DecryptError("no matching prefix found")


# ---- configuration -------------------------------------------------------------------------------------------

_KEY_SIZES = {"aesgcm": (16, 24, 32), "aescbc": (16, 24, 32), "secretbox": (32,)}


def _provider(kind: str, body: Any, where: str) -> list[_Provider]:
    if kind == "identity":
        return [_Identity()]
    if kind not in _KEY_SIZES:
        raise EncryptionConfigError(f"{where}: provider {kind!r} is not supported (aesgcm, aescbc, secretbox, "
                                    "identity)")
    keys = (body or {}).get("keys") if isinstance(body, dict) else None
    if not isinstance(keys, list) or not keys:
        raise EncryptionConfigError(f"{where}.{kind}.keys: at least one key is required")
    out: list[_Provider] = []
    for j, k in enumerate(keys):
        at = f"{where}.{kind}.keys[{j}]"
        name = k.get("name") if isinstance(k, dict) else None
        if not isinstance(name, str) or not name or ":" in name:
            raise EncryptionConfigError(f"{at}.name: a non-empty name without ':' is required")
        try:
            secret = base64.b64decode(str(k.get("secret", "")), validate=True)
        except (binascii.Error, ValueError):
            raise EncryptionConfigError(f"{at}.secret: not valid base64") from None
        if len(secret) not in _KEY_SIZES[kind]:
            sizes = " or ".join(str(n) for n in _KEY_SIZES[kind])
            raise EncryptionConfigError(f"{at}.secret: {kind} needs a key of {sizes} bytes, got {len(secret)}")
        out.append(_AESGCM(name, secret) if kind == "aesgcm" else _AESCBC(name, secret) if kind == "aescbc"
                   else _Secretbox(name, secret))
    return out


def parse_config(doc: Any, source: str = "kube.encryption_config") -> Encryption:
    """An ``Encryption`` from a parsed ``EncryptionConfiguration`` document."""
    if not isinstance(doc, dict):
        raise EncryptionConfigError(f"{source}: not an EncryptionConfiguration object")
    if doc.get("kind") != "EncryptionConfiguration" or doc.get("apiVersion") != "apiserver.config.k8s.io/v1":
        raise EncryptionConfigError(f"{source}: apiVersion/kind must be apiserver.config.k8s.io/v1 "
                                    "EncryptionConfiguration")
    entries = doc.get("resources")
    if not isinstance(entries, list) or not entries:
        raise EncryptionConfigError(f"{source}: resources: at least one entry is required")
    rules = []
    for i, entry in enumerate(entries):
        where = f"resources[{i}]"
        pats = entry.get("resources") if isinstance(entry, dict) else None
        if not isinstance(pats, list) or not pats or not all(isinstance(p, str) and p for p in pats):
            raise EncryptionConfigError(f"{source}: {where}.resources: a list of resource names is required")
        provs = entry.get("providers")
        if not isinstance(provs, list) or not provs:
            raise EncryptionConfigError(f"{source}: {where}.providers: at least one provider is required")
        providers: list[_Provider] = []
        for j, p in enumerate(provs):
            if not isinstance(p, dict) or len(p) != 1:
                raise EncryptionConfigError(f"{source}: {where}.providers[{j}]: exactly one provider type per entry")
            ((kind, body),) = p.items()
            providers += _provider(str(kind), body, f"{source}: {where}.providers[{j}]")
        rules.append(_Rule(tuple(p if "." in p else p + "." for p in pats), tuple(providers)))
    return Encryption(rules, source)


def load_encryption(path: Path) -> Encryption:
    """An ``Encryption`` from an EncryptionConfiguration YAML (or JSON) file."""
    where = f"kube.encryption_config ({path})"
    try:
        raw = path.read_bytes()[: _MAX_CONFIG + 1]
    except OSError as e:
        raise EncryptionConfigError(f"{where}: {e.strerror}") from None
    if len(raw) > _MAX_CONFIG:
        raise EncryptionConfigError(f"{where}: larger than 1 MiB")
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise EncryptionConfigError(f"{where}: not YAML: {e}") from None
    return parse_config(doc, where)


def _secrets_only(provider: _Provider, source: str) -> Encryption:
    # identity second: Secrets written before encryption was on still read, and are sealed on their next write
    return Encryption([_Rule(("secrets.",), (provider, _Identity()))], source)


def local_encryption(data_dir: Path, env: Mapping[str, str] | None = None) -> Encryption:
    """The default: Secrets sealed with aesgcm, the key from ``$PITWALL_SECRETS_KEY`` (base64) or else from
    ``data_dir/secrets.key`` (32 random bytes, created once, mode 0600)."""
    if env is None:
        env = os.environ
    if env.get(KEY_ENV):
        try:
            key = base64.b64decode(env[KEY_ENV], validate=True)
        except (binascii.Error, ValueError):
            raise EncryptionConfigError(f"{KEY_ENV}: not valid base64") from None
        if len(key) not in (16, 24, 32):
            raise EncryptionConfigError(f"{KEY_ENV}: an aesgcm key is 16, 24 or 32 bytes, got {len(key)}")
        return _secrets_only(_AESGCM("key1", key), KEY_ENV)
    path = data_dir / "secrets.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    key = path.read_bytes()
    if len(key) not in (16, 24, 32):
        raise EncryptionConfigError(f"{path}: an aesgcm key is 16, 24 or 32 bytes, got {len(key)}")
    return _secrets_only(_AESGCM("key1", key), str(path))
