"""Archives behind fsspec URLs (``s3://``, ``gs://``, ``memory://``, …): opening, ranged reads and listing.

Local paths never come here: they keep the direct chunk-file reads of :mod:`trajkit.archive.reader`. A URL
archive is opened through zarr's asynchronous :class:`zarr.storage.FsspecStore`; an uncompressed params
block is then read as byte ranges of its chunk objects (``store.get_partial_values`` → the file system's
``_cat_ranges``: one ranged request per (row, chunk), all of a block in flight together), not chunk by
chunk. Credentials and endpoint come the usual way — for S3 the AWS environment variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL`` for MinIO or
another S3-compatible server) — or from ``storage_options``, passed to the fsspec file system as is
(``{"anon": true}``, ``{"endpoint_url": "http://127.0.0.1:9000"}``, ``{"profile": "lab"}``).

>>> group = open_url_group("s3://bucket/run.trajkit", {"anon": True})    # doctest: +SKIP

Storage failures become one :class:`~trajkit.errors.ArchiveError` line naming the URL and the fix
(:func:`storage_error`): no credentials, access denied, a missing bucket, an unreachable endpoint, a
missing fsspec backend.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from trajkit.errors import ArchiveError

#: file-system protocols whose first path component is a bucket (checked when an object is missing)
BUCKET_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "az", "oss"})

NO_CREDENTIALS_FIX = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or pass storage options "
                      "'{\"anon\": true}' for a public bucket")


def is_url(path: str | os.PathLike) -> bool:
    """True for an fsspec URL other than ``file://`` (those are local paths)."""
    s = str(path)
    return "://" in s and not s.startswith("file://")


def join(base: str | os.PathLike, name: str) -> str:
    """``base/name`` for a URL or a local path (a URL's ``//`` is kept)."""
    return f"{str(base).rstrip('/')}/{name}" if is_url(base) else os.path.join(base, name)


def parse_storage_options(text: str | None, key: str = "--storage-options") -> dict[str, Any] | None:
    """The JSON object given on the command line (None when not given), or one error line naming ``key``."""
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ArchiveError(f"{key} {text!r}: not valid JSON ({e.msg}); give an object, e.g. "
                           "'{\"endpoint_url\": \"http://127.0.0.1:9000\"}'") from None
    if not isinstance(doc, dict):
        raise ArchiveError(f"{key} {text!r}: expected a JSON object of fsspec options, e.g. '{{\"anon\": true}}'")
    return doc


def _names(e: BaseException) -> set[str]:
    return {c.__name__ for c in type(e).__mro__}


def storage_error(e: BaseException, url: str) -> ArchiveError:
    """One line for a failure of the storage behind ``url``, naming the fix."""
    names = _names(e)
    text = " ".join(str(e).split()) or type(e).__name__
    if names & {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}:
        return ArchiveError(f"{url}: no credentials for the object store ({text}); {NO_CREDENTIALS_FIX}")
    if "PermissionError" in names or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
        return ArchiveError(f"{url}: access denied ({text}); check the credentials and that they may read "
                            "(or write) this bucket")
    if names & {"EndpointConnectionError", "ConnectionError", "ClientConnectorError", "ConnectTimeoutError"}:
        return ArchiveError(f"{url}: cannot reach the storage endpoint ({text}); check AWS_ENDPOINT_URL or the "
                            "endpoint_url storage option")
    if isinstance(e, ImportError | ValueError) and ("protocol" in text or "install" in text.lower()):
        return ArchiveError(f"{url}: no fsspec backend for this URL ({text}); pip install 'trajkit[s3]' for "
                            "s3:// (gcsfs for gs://, adlfs for az://)")
    if isinstance(e, FileNotFoundError) and "bucket" in text.lower():
        return ArchiveError(f"{url}: the bucket does not exist ({text}); create it or fix the URL")
    return ArchiveError(f"{url}: storage error ({type(e).__name__}: {text})")


def filesystem(url: str, storage_options: dict[str, Any] | None = None, asynchronous: bool = False
               ) -> tuple[Any, str]:
    """``(fsspec file system, path inside it)`` for ``url``."""
    try:
        from fsspec.core import url_to_fs

        return url_to_fs(url, **({"asynchronous": True} if asynchronous else {}), **(storage_options or {}))
    except Exception as e:
        raise storage_error(e, url) from None


def bucket_of(fs: Any, path: str) -> str | None:
    """The bucket of ``path`` when ``fs`` is an object store with buckets, else None."""
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return path.split("/", 1)[0] if protocols & BUCKET_PROTOCOLS else None


def missing_bucket(fs: Any, path: str, url: str) -> str | None:
    """The bucket of ``path`` when it does not exist (synchronous ``fs``), else None; a failure to ask
    (no credentials, access denied) is raised as one line naming ``url``."""
    bucket = bucket_of(fs, path)
    if bucket is None:
        return None
    try:
        fs.info(bucket)
    except FileNotFoundError:
        return bucket
    except Exception as e:
        raise storage_error(e, url) from None
    return None


def open_url_group(url: str, storage_options: dict[str, Any] | None = None) -> Any:
    """The zarr v3 root group of the archive at ``url``, through an asynchronous :class:`FsspecStore`.

    Raises one :class:`ArchiveError` line when the storage cannot be read, the bucket does not exist, or
    no root ``zarr.json`` is there (nothing pushed, or a push that has not finished: FORMAT.md §11).
    """
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync
    from zarr.storage import FsspecStore

    url = url.rstrip("/")
    try:
        store = FsspecStore.from_url(url, storage_options=storage_options, read_only=True)
        root = sync(store.get("zarr.json", prototype=default_buffer_prototype()))
    except ArchiveError:
        raise
    except Exception as e:
        raise storage_error(e, url) from None
    if root is None:
        sync_fs, path = filesystem(url, storage_options)
        bucket = missing_bucket(sync_fs, path, url)
        if bucket is not None:
            raise ArchiveError(f"{url}: bucket {bucket!r} does not exist; create it or fix the URL")
        raise ArchiveError(f"{url}: no trajkit archive there (no zarr.json): nothing was pushed to this URL, or "
                           "a push did not finish; run `trajkit push` again")
    try:
        return zarr.open_group(store, mode="r", zarr_format=3)
    except Exception as e:
        raise ArchiveError(f"{url}: zarr.json is unreadable ({type(e).__name__}: {e}); run `trajkit validate` "
                           "on the local copy and push it again") from None


def _full_key(store_path: Any, key: str) -> str:
    return f"{store_path.path}/{key}" if store_path.path else key


def read_raw_rows(store_path: Any, array: str, rows: np.ndarray, start: int, stop: int, chunk_cols: int,
                  key_of: Callable[[int, int], str], out: np.ndarray, where: str) -> tuple[int, str, str] | None:
    """Fill ``out[i, :] = params[rows[i], start:stop]`` of an uncompressed params array behind a zarr
    store, with one byte-range request per (row, chunk), all issued together.

    ``key_of(row, j)`` is the chunk key inside ``array``; ``where`` (the archive's URL) names a storage
    failure. Returns None, or ``(row, key, "missing" | "truncated")`` of the first chunk that is absent or
    shorter than the range asked for.
    """
    from zarr.abc.store import RangeByteRequest
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    cc = chunk_cols
    requests, targets = [], []
    for i, r in enumerate(rows):
        for j in range(start // cc, (stop - 1) // cc + 1):
            lo, hi = max(start, j * cc), min(stop, (j + 1) * cc)
            key = key_of(int(r), j)
            requests.append((_full_key(store_path, f"{array}/{key}"),
                             RangeByteRequest((lo - j * cc) * 4, (hi - j * cc) * 4)))
            targets.append((i, lo - start, hi - start, int(r), key))
    try:
        buffers = sync(store_path.store.get_partial_values(default_buffer_prototype(), requests))
    except Exception as e:
        raise storage_error(e, where) from None
    for buf, (i, a, b, r, key) in zip(buffers, targets, strict=True):
        if buf is None:
            return r, key, "missing"
        data = buf.to_bytes()
        if len(data) != (b - a) * 4:
            return r, key, "truncated"
        out[i, a:b] = np.frombuffer(data, dtype="<f4")
    return None


def object_sizes(store_path: Any, prefix: str) -> dict[str, int]:
    """``{key relative to prefix: size in bytes}`` of every object under ``prefix`` (one listing)."""
    from zarr.core.sync import sync

    fs, base = store_path.store.fs, store_path.store.path
    root = f"{base.rstrip('/')}/{_full_key(store_path, prefix)}".rstrip("/")
    try:
        found = sync(fs._find(root, detail=True))
    except Exception as e:
        raise storage_error(e, f"{store_path}/{prefix}") from None
    return {k.removeprefix(root).lstrip("/"): int(v.get("size") or 0) for k, v in found.items()}


def read_text(url: str, storage_options: dict[str, Any] | None = None) -> str | None:
    """The text of the object at ``url``, or None when there is none."""
    fs, path = filesystem(url, storage_options)
    try:
        return fs.cat_file(path).decode()
    except FileNotFoundError:
        return None
    except Exception as e:
        raise storage_error(e, url) from None


def object_exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether an object exists at ``url``."""
    fs, path = filesystem(url, storage_options)
    try:
        return bool(fs.isfile(path))
    except Exception as e:
        raise storage_error(e, url) from None


def list_archives(url: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """URLs of the ``*.trajkit`` entries directly under the prefix ``url``, sorted (one listing)."""
    fs, path = filesystem(url, storage_options)
    try:
        entries = fs.ls(path.rstrip("/"), detail=False)
    except FileNotFoundError:
        bucket = missing_bucket(fs, path, url)
        if bucket is not None:
            raise ArchiveError(f"{url}: bucket {bucket!r} does not exist; create it or fix the URL") from None
        return []
    except Exception as e:
        raise storage_error(e, url) from None
    names = sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries})
    return [join(url, n) for n in names if n.endswith(".trajkit")]


def glob_urls(pattern: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """URLs matching a glob ``pattern`` (``s3://b/sweep/*.trajkit``), sorted."""
    fs, path = filesystem(pattern, storage_options)
    try:
        matches = fs.glob(path)
    except Exception as e:
        raise storage_error(e, pattern) from None
    return sorted(fs.unstrip_protocol(m) for m in matches)
