"""``trajkit push``: publish local archives (or an ensemble directory) to object storage, resumably.

The recorder writes to local disk (crash-safe, FORMAT.md §5–6); ``push`` then copies a committed archive to
any fsspec URL (``s3://bucket/prefix/``, ``gs://…``, ``memory://…``):

1. every archive is validated first (:func:`trajkit.archive.validate`) and must have no live writer;
   one that does not validate is refused in one line, before anything is uploaded;
2. each object whose copy at the destination already has the same size and MD5 (S3's ETag of a
   single-part upload; other stores are read back) is skipped — an interrupted push resumes;
3. the other objects are uploaded concurrently, each checked after upload against its local MD5
   (the ETag the store returns, or the bytes read back);
4. the archive's root ``zarr.json`` — the object that makes it open as an archive — is uploaded last,
   and an existing root of the same run is deleted before any other object of that run changes, so a
   reader sees the old complete archive, nothing, or the new complete archive, never a mix;
5. for an ensemble directory its ``ensemble.json`` goes last of all, after every archive is published.

Destinations mirror ``aws s3 sync``: ``push ens/ s3://b/ens/`` puts ``ens/r00.trajkit`` at
``s3://b/ens/r00.trajkit``. A single archive goes *into* a destination that ends in ``/``
(``push run.trajkit s3://b/runs/`` → ``s3://b/runs/run.trajkit``); otherwise the destination is its URL.
The writer lock file and temp files of a crashed writer are not pushed.

>>> push("ens", "s3://bucket/ens/").lines()          # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trajkit.archive import format as fmt
from trajkit.archive.ensemble_file import ENSEMBLE_FILE, read_ensemble_file
from trajkit.archive.info import run_state
from trajkit.archive.storage import filesystem, is_url, missing_bucket, storage_error
from trajkit.archive.validate import validate
from trajkit.errors import ArchiveError, TrajkitError

ROOT = "zarr.json"
#: uploads in flight at once
JOBS = 8
_MD5_ETAG = re.compile(r'^"?([0-9a-f]{32})"?$')
_TEMP = re.compile(r"^\..+\.tmp\d*$")


@dataclass
class PushReport:
    """What :func:`push` did: the archive URLs published, objects uploaded and skipped, bytes sent."""

    source: str
    destination: str
    archives: list[str] = field(default_factory=list)
    ensemble_file: str | None = None
    uploaded: int = 0
    skipped: int = 0
    bytes_uploaded: int = 0

    def lines(self) -> list[str]:
        what = f"{len(self.archives)} archive{'s' if len(self.archives) != 1 else ''}"
        if self.ensemble_file:
            what += f" and {ENSEMBLE_FILE}"
        return [f"pushed {what} of {self.source} -> {self.destination}: {self.uploaded} objects uploaded "
                f"({self.bytes_uploaded / 2**20:.1f} MiB), {self.skipped} already there; MD5 checksums verified",
                *(f"  {url}" for url in self.archives)]


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _store_md5(info: dict[str, Any] | None) -> str | None:
    """The content MD5 a store reports for an object (S3 single-part ETag, GCS md5Hash), or None."""
    if not isinstance(info, dict):
        return None
    for key in ("ETag", "etag", "md5", "md5Hash"):
        value = info.get(key)
        if isinstance(value, str):
            m = _MD5_ETAG.match(value.lower())
            if m:
                return m.group(1)
            if key == "md5Hash":
                import base64
                import binascii

                try:
                    return base64.b64decode(value).hex()
                except (binascii.Error, ValueError):
                    return None
    return None


def archive_files(root: Path) -> list[str]:
    """Keys (``/``-separated, relative to ``root``) of the files of an archive that are pushed, sorted;
    the writer lock and temp files are left out."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        rel = Path(d).relative_to(root)
        for name in files:
            if name == fmt.LOCK_FILE or _TEMP.match(name):
                continue
            out.append((rel / name).as_posix())
    return sorted(out)


class _Uploader:
    """Uploads files to one file system, skipping identical objects and verifying each upload."""

    def __init__(self, fs: Any, jobs: int, report: PushReport, on_upload: Callable[[str, str], None] | None):
        self.fs, self.jobs, self.report, self.on_upload = fs, jobs, report, on_upload
        self._lock = threading.Lock()        # uploads finish on several threads

    def remote_md5(self, rpath: str, info: dict[str, Any] | None) -> str | None:
        md5 = _store_md5(info)
        if md5 is None and info is not None:
            md5 = _md5(self.fs.cat_file(rpath))
        return md5

    def same(self, local: Path, rpath: str, info: dict[str, Any] | None) -> bool:
        """Whether the object at ``rpath`` (listed with ``info``; None: absent) equals the local file."""
        if info is None or int(info.get("size") or -1) != local.stat().st_size:
            return False
        return self.remote_md5(rpath, info) == _md5(local.read_bytes())

    def put(self, local: Path, rpath: str, url: str) -> None:
        data = local.read_bytes()
        want = _md5(data)
        response = self.fs.pipe_file(rpath, data)
        got = _store_md5(response)
        if got is None:
            got = self.remote_md5(rpath, self.fs.info(rpath))
        if got != want:
            raise ArchiveError(f"{url}: checksum mismatch after upload (MD5 {got} at the destination, {want} "
                               f"locally for {local}); push again")
        with self._lock:
            self.report.uploaded += 1
            self.report.bytes_uploaded += len(data)
            if self.on_upload is not None:
                self.on_upload(str(local), url)

    def put_all(self, items: list[tuple[Path, str, str]]) -> None:
        """Upload ``(local, remote path, url)`` items concurrently; the first failure stops the rest."""
        if not items:
            return
        with ThreadPoolExecutor(min(self.jobs, len(items)), thread_name_prefix="trajkit-push") as pool:
            futures = [pool.submit(self.put, *item) for item in items]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for f in pending:
                f.cancel()
            for f in done:
                f.result()


def _listing(fs: Any, path: str, url: str) -> dict[str, dict[str, Any]]:
    try:
        return fs.find(path, detail=True)
    except FileNotFoundError:
        return {}
    except Exception as e:
        raise storage_error(e, url) from None


def _push_archive(up: _Uploader, local: Path, url: str, base: str) -> None:
    """Push the archive directory ``local`` to ``url`` (``base``: its path in ``up.fs``)."""
    fs = up.fs
    remote = _listing(fs, base, url)
    keys = archive_files(local)
    rpath = {k: f"{base}/{k}" for k in keys}
    root_info = remote.get(rpath[ROOT])
    if root_info is not None:
        try:
            theirs = json.loads(fs.cat_file(rpath[ROOT])).get("attributes", {}).get(fmt.ROOT_ATTR, {})
        except (ValueError, AttributeError):
            theirs = {}
        mine = json.loads((local / ROOT).read_text())["attributes"][fmt.ROOT_ATTR]
        if theirs.get("run_id") != mine.get("run_id"):
            raise ArchiveError(f"{url}: holds another archive (run {str(theirs.get('run_id'))[:8]}, this is run "
                               f"{str(mine.get('run_id'))[:8]}); push to another prefix or delete it first")
    todo = [k for k in keys if k != ROOT and not up.same(local / k, rpath[k], remote.get(rpath[k]))]
    root_same = not todo and up.same(local / ROOT, rpath[ROOT], root_info)
    if todo and root_info is not None:
        fs.rm_file(rpath[ROOT])              # unpublish the old copy before any of its objects change
    up.report.skipped += len(keys) - len(todo) - (0 if root_same else 1)
    up.put_all([(local / k, rpath[k], f"{url}/{k}") for k in todo])
    if not root_same:
        up.put(local / ROOT, rpath[ROOT], f"{url}/{ROOT}")
    up.report.archives.append(url)


def _archives_of(source: Path) -> tuple[list[Path], bool]:
    """The archive directories under ``source`` and whether it is an ensemble directory."""
    if (source / ROOT).is_file():
        return [source], False
    found = sorted(p for p in source.glob("*.trajkit") if (p / ROOT).is_file())
    if not found:
        raise ArchiveError(f"{source}: neither an archive (no zarr.json) nor an ensemble directory (no *.trajkit "
                           "archive inside); pass NAME.trajkit or the directory of an ensemble")
    return found, True


def _check_pushable(path: Path) -> None:
    problems = validate(path)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ArchiveError(f"{path}: does not validate, nothing pushed: {problems[0].message}{more}; run "
                           f"`trajkit validate {path}`")
    state = run_state(path)
    if state.state == "live":
        raise ArchiveError(f"{path}: a writer is still recording it (pid {state.pid}); push it when the run "
                           "has finished")


def push(source: str | os.PathLike, destination: str, storage_options: dict[str, Any] | None = None, *,
         jobs: int = JOBS, on_upload: Callable[[str, str], None] | None = None) -> PushReport:
    """Upload the archive or ensemble directory ``source`` to the URL ``destination`` (module doc).

    ``storage_options`` go to the fsspec file system (credentials and endpoint otherwise come from the
    environment, e.g. ``AWS_ENDPOINT_URL``); ``on_upload(local, url)`` is called after each verified upload.
    """
    src = Path(source)
    if not is_url(destination):
        raise ArchiveError(f"{destination}: not a URL; push to object storage (s3://bucket/prefix/); copy local "
                           "archives with cp -r")
    if not src.exists():
        raise ArchiveError(f"{src}: no such archive or ensemble directory")
    if src.is_file():
        raise ArchiveError(f"{src}: is a file (a zip?); push the archive directory instead")
    if jobs < 1:
        raise ArchiveError(f"jobs={jobs}: need at least 1 upload in flight")
    archives, is_ensemble = _archives_of(src)
    doc = read_ensemble_file(src) if is_ensemble else None          # an invalid ensemble.json is refused
    for a in archives:
        _check_pushable(a)
    dest = destination.rstrip("/")
    if not is_ensemble and destination.endswith("/"):
        dest = f"{dest}/{src.name}"
    fs, path = filesystem(dest, storage_options)
    path = path.rstrip("/")
    bucket = missing_bucket(fs, path, destination)
    if bucket is not None:
        raise ArchiveError(f"{destination}: bucket {bucket!r} does not exist; create it first (aws s3 mb "
                           f"s3://{bucket}) or fix the URL")
    report = PushReport(str(src), destination)
    up = _Uploader(fs, jobs, report, on_upload)
    try:
        for a in archives:
            if is_ensemble:
                _push_archive(up, a, f"{dest}/{a.name}", f"{path}/{a.name}")
            else:
                _push_archive(up, a, dest, path)
        if doc is not None:
            local, rpath = src / ENSEMBLE_FILE, f"{path}/{ENSEMBLE_FILE}"
            info = _listing(fs, rpath, dest).get(rpath)
            if up.same(local, rpath, info):
                report.skipped += 1
            else:
                up.put(local, rpath, f"{dest}/{ENSEMBLE_FILE}")
            report.ensemble_file = f"{dest}/{ENSEMBLE_FILE}"
    except TrajkitError:
        raise
    except Exception as e:
        raise storage_error(e, destination) from None
    return report
