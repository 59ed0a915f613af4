"""The on-disk cache of raw E-utilities responses: DIR/cache/<util>/<xx>/<key>.gz, one file per request.

The key is a SHA-256 of the utility name and the sorted request parameters *without* ``api_key``
(nor ``email``/``tool``, which do not change the answer), so a key never depends on, or reveals, a secret.
Each file is gzip-compressed and holds one JSON header line (util, params, request URL without key,
retrieval time, HTTP status, body length and SHA-256) followed by the body. Files are written
atomically (temporary file, fsync, rename); a file that fails its gzip CRC, its header or its checksum is
deleted and reported as a miss, so a truncated or corrupt entry is refetched and never parsed as data.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from datetime import datetime, timezone
from pathlib import Path

from .records import atomic_write

SECRET_PARAMS = frozenset({"api_key"})
IGNORED_PARAMS = frozenset({"api_key", "email", "tool"})
FORMAT = 1


def key_params(params) -> list[tuple[str, str]]:
    """The request parameters that identify an answer: sorted (name, value) pairs, no key/email/tool."""
    return sorted((str(k), str(v)) for k, v in params if k not in IGNORED_PARAMS)


def cache_key(util: str, params) -> str:
    """The cache key of a request: SHA-256 over the utility and its identifying parameters."""
    blob = json.dumps([util, key_params(params)], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def utc_now() -> str:
    """The current time as ISO 8601 UTC with second precision, e.g. 2026-01-02T03:04:05Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Cache:
    """Raw responses on disk; ``get`` returns (body, header) or None, ``put`` stores one atomically."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.discarded = 0  # corrupt entries found (and deleted) by this instance

    def path(self, util: str, key: str) -> Path:
        name = util.split(".")[0]
        return self.root / name / key[:2] / f"{key}.gz"

    def get(self, util: str, key: str) -> tuple[bytes, dict] | None:
        """The cached body and header for `key`, or None when absent or damaged (a damaged file is removed)."""
        path = self.path(util, key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = gzip.decompress(raw)  # checks the gzip CRC-32 and length: truncation and bit rot fail here
            head, sep, body = data.partition(b"\n")
            header = json.loads(head)
            ok = (sep and isinstance(header, dict) and header.get("format") == FORMAT and header.get("key") == key
                  and header.get("length") == len(body)
                  and header.get("sha256") == hashlib.sha256(body).hexdigest())
        except (OSError, EOFError, zlib.error, ValueError, UnicodeDecodeError):
            ok = False
        if not ok:
            self.discard(util, key)
            return None
        return body, header

    def discard(self, util: str, key: str) -> None:
        """Remove a damaged entry so that it is fetched again."""
        self.discarded += 1
        try:
            self.path(util, key).unlink()
        except FileNotFoundError:
            pass

    def put(self, util: str, key: str, body: bytes, header: dict) -> dict:
        """Store `body` with `header` (plus key, length, checksum) atomically; returns the full header."""
        header = dict(header, format=FORMAT, key=key, length=len(body), sha256=hashlib.sha256(body).hexdigest())
        for name in SECRET_PARAMS:  # belt and braces: nothing secret goes to disk
            header.pop(name, None)
        path = self.path(util, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(header, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n" + body
        # The temporary name carries the writer's pid so that a dead writer's leftovers can be told apart.
        with atomic_write(path, prefix=f".{key[:16]}.{os.getpid()}.") as fh:
            # mtime=0: the bytes depend on the content only
            with gzip.GzipFile(filename="", fileobj=fh, mode="wb", compresslevel=6, mtime=0) as gz:
                gz.write(payload)
        return header

    def remove_stale_temporaries(self) -> int:
        """Delete the temporary files of writers that died mid-write (killed processes); returns the count."""
        removed = 0
        for tmp in self.root.glob("*/*/.*.tmp"):
            parts = tmp.name.split(".")
            pid = int(parts[2]) if len(parts) >= 5 and parts[2].isdigit() else None
            if pid is not None and _alive(pid):
                continue
            try:
                tmp.unlink()
                removed += 1
            except OSError:
                pass
        return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
