"""Plain files beside the Delta tables (policy, staged batches, run records, calibration maps,
metrics bases, reports) on a local folder or S3.

Delta tables go through delta-rs with :meth:`Settings.storage_options`; the few non-Delta files a
lake holds go through ``pyarrow.fs`` here, built from the same options, so a lake is one URI
whether it is ``/data/lake`` or ``s3://bucket/lake``. An object PUT is atomic (a reader sees the
old object or the new one), so only local writes need a temporary name.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from weaver.core.errors import InvalidParameterError, ObjectStoreError
from weaver.core.scratch import scratch


def _is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def _local(uri: str) -> str:
    return uri.removeprefix("file://")


def join(root: str, *parts: str) -> str:
    """URI of `parts` under `root`: an object key under an s3:// root, else a resolved local path."""
    if _is_remote(root):
        return "/".join([root.rstrip("/"), *parts])
    return str(Path(_local(root)).resolve().joinpath(*parts))


def lake_file(lake: str, *parts: str) -> str:
    """URI of a plain file (or folder) under ``<lake>/_weaver`` (a local path or an s3:// key)."""
    return join(lake, "_weaver", *parts)


def filesystem(uri: str, options: dict[str, str] | None):
    """(pyarrow FileSystem, path inside it) for `uri`; `options` are delta-rs' S3 storage options."""
    import pyarrow.fs as pafs

    if not _is_remote(uri):
        return pafs.LocalFileSystem(), str(Path(_local(uri)).resolve())
    if not uri.startswith("s3://"):
        # Bad input, not a broken environment: raised before anything is written.
        raise InvalidParameterError(f"{uri!r}: only local paths and s3://bucket/key URIs are supported; "
                                    "choose one of those")
    o = dict(options or {})
    kw: dict = {}
    endpoint = o.get("aws_endpoint_url")
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kw["endpoint_override"], kw["scheme"] = (host, scheme) if host else (endpoint, "https")
    if o.get("aws_region"):
        kw["region"] = o["aws_region"]
    if o.get("aws_access_key_id") and o.get("aws_secret_access_key"):
        kw["access_key"], kw["secret_key"] = o["aws_access_key_id"], o["aws_secret_access_key"]
    return pafs.S3FileSystem(**kw), uri[len("s3://"):]


@contextmanager
def _store(uri: str, what: str):
    """Map a remote store's failure to ObjectStoreError (local errors keep their own types)."""
    try:
        yield
    except OSError as exc:
        if not _is_remote(uri):
            raise
        raise ObjectStoreError(f"cannot {what} {uri}: {exc}; check WEAVER_S3_ENDPOINT, WEAVER_S3_REGION, the "
                               "credentials and that the bucket exists") from exc


def _parent(fs, path: str) -> None:
    import pyarrow.fs as pafs

    if isinstance(fs, pafs.LocalFileSystem):
        with _local_write(path):
            Path(path).parent.mkdir(parents=True, exist_ok=True)


#: Local failures that say the path itself cannot hold a file (a parent is a file, a folder is in
#: the way, a pseudo file system such as /proc, no permission) - bad input, not a broken machine.
_UNWRITABLE = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)


@contextmanager
def _local_write(path: str, tmp: str | None = None):
    """Map a local write's "this path cannot hold a file" failure to InvalidParameterError, after
    removing the temporary file `tmp` it may have left: the target is unchanged."""
    try:
        yield
    except _UNWRITABLE as exc:
        if tmp is not None:
            try:
                Path(tmp).unlink(missing_ok=True)
            except OSError:
                pass  # no temporary file could be made there either
        raise InvalidParameterError(f"cannot write {path}: {exc.strerror or exc}; choose a location in a writable "
                                    "folder") from exc


def read_bytes(uri: str, options: dict[str, str] | None, *, missing_ok: bool = False) -> bytes | None:
    """The bytes of the file at `uri` (None when absent and `missing_ok`)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri, options)
    with _store(uri, "read"):
        if missing_ok and fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        with fs.open_input_stream(path) as f:
            return f.read()


def read_text(uri: str, options: dict[str, str] | None, *, missing_ok: bool = False) -> str | None:
    """The UTF-8 text of the file at `uri` (None when absent and `missing_ok`)."""
    raw = read_bytes(uri, options, missing_ok=missing_ok)
    return None if raw is None else raw.decode("utf-8")


def write_bytes(uri: str, data: bytes, options: dict[str, str] | None) -> str:
    """Replace the file at `uri` with `data`; a reader never sees half of it. Returns `uri`."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri, options)
    _parent(fs, path)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = path + ".tmp"
        with _local_write(path, tmp):
            with fs.open_output_stream(tmp) as f:
                f.write(data)
            Path(tmp).replace(path)
    else:
        with _store(uri, "write"), fs.open_output_stream(path) as f:
            f.write(data)
    return uri


def write_text(uri: str, text: str, options: dict[str, str] | None) -> str:
    """Replace the file at `uri` with `text` (UTF-8), atomically. Returns `uri`."""
    return write_bytes(uri, text.encode("utf-8"), options)


def write_parquet(uri: str, table: pa.Table, options: dict[str, str] | None) -> str:
    """Write `table` as one Parquet file at `uri`, replacing it atomically. Returns `uri`."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs, path = filesystem(uri, options)
    _parent(fs, path)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = path + ".tmp"
        with _local_write(path, tmp):
            pq.write_table(table, tmp, filesystem=fs)
            Path(tmp).replace(path)
    else:
        with _store(uri, "write"):
            pq.write_table(table, path, filesystem=fs)
    return uri


def exists(uri: str, options: dict[str, str] | None) -> bool:
    """Whether a file is at `uri`."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri, options)
    with _store(uri, "look up"):
        return fs.get_file_info(path).type == pafs.FileType.File


def list_folder(uri: str, options: dict[str, str] | None, *, folders: bool = False) -> list[str]:
    """Sorted names of the files (or, with `folders`, the sub-folders) directly under `uri`; empty
    when `uri` does not exist. On S3 a "folder" is a common key prefix."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri, options)
    want = pafs.FileType.Directory if folders else pafs.FileType.File
    with _store(uri, "list"):
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == want)


def delete(uri: str, options: dict[str, str] | None) -> None:
    """Remove the file at `uri` (nothing happens when it is already gone)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri, options)
    with _store(uri, "delete"):
        if fs.get_file_info(path).type == pafs.FileType.File:
            fs.delete_file(path)


def read_parquet(uri: str, options: dict[str, str] | None, *, missing_ok: bool = False) -> pa.Table | None:
    """The Parquet file at `uri` as an Arrow table (None when absent and `missing_ok`)."""
    import pyarrow.parquet as pq

    if missing_ok and not exists(uri, options):
        return None
    fs, path = filesystem(uri, options)
    with _store(uri, "read"):
        return pq.read_table(path, filesystem=fs)


class Folder:
    """A local folder standing in for `uri` while files are written into it (see :func:`folder`)."""

    def __init__(self, uri: str, path: Path):
        self.uri, self.path = uri, path

    def uri_of(self, local: str | Path) -> str:
        """The final URI of a file written under :attr:`path`."""
        rel = Path(local).resolve().relative_to(self.path.resolve())
        return join(self.uri, *rel.parts) if rel.parts else self.uri


@contextmanager
def folder(uri: str, options: dict[str, str] | None) -> Iterator[Folder]:
    """A folder of plain files (a report's HTML, PNG, JSON) at `uri`, written by local-file code.

    A local `uri` is the folder itself. For an s3:// `uri` the writer gets a temporary folder whose
    files are PUT under `uri` (same relative names) when the block ends without an error; renderers
    such as matplotlib's savefig need a real file, and each PUT is whole, so a reader sees an old
    or a new file, never half of one. Nothing is uploaded when the block raises.
    """
    if not _is_remote(uri):
        p = Path(_local(uri))
        p.mkdir(parents=True, exist_ok=True)
        yield Folder(str(p.resolve()), p)
        return
    filesystem(uri, options)  # a bad URI fails before any rendering
    with scratch("objstore") as tmp:
        f = Folder(uri.rstrip("/"), Path(tmp))
        yield f
        for local in sorted(p for p in Path(tmp).rglob("*") if p.is_file()):
            write_bytes(f.uri_of(local), local.read_bytes(), options)
