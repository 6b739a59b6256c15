"""Atomic file writes and content hashes.

Declared Snakemake outputs are written last and atomically: write to a temporary sibling,
then ``os.replace``. A crashed job therefore never leaves a half-written output that a
later run would mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, is_dir: bool = False, replace: bool = False, merge: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` on success.

    On an exception the temporary file or folder is removed and ``path`` is untouched. The
    result gets the permissions a plain ``open``/``mkdir`` would give (``0o666``/``0o777``
    less the umask), not ``mkstemp``'s private ``0o600``/``0o700``.

    Folders (``is_dir``): an existing empty folder is replaced; an existing non-empty one is
    a DeepwideError (nothing is written), unless ``replace`` (the caller owns the whole
    folder: it is swapped for the new one, the old removed only after the swap) or ``merge``
    (the new folder's files are moved into the existing one, replacing only those names;
    everything else in it is kept). A file where a folder should be, or a folder where a
    file should be, is a DeepwideError naming the path.
    """
    from deepwide.errors import DeepwideError

    path = Path(path)
    if is_dir and path.exists() and not path.is_dir():
        raise DeepwideError(f"{path} exists and is not a folder: it is left untouched; choose a folder path")
    if not is_dir and path.is_dir():
        raise DeepwideError(f"{path} is a folder, a file is to be written there: it is left untouched; choose a file path")
    if is_dir and not (replace or merge) and path.is_dir() and any(path.iterdir()):
        raise DeepwideError(f"{path} exists and is not empty: it is left untouched; choose a new or empty folder "
                            "(or remove this one yourself)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, 0o777 & ~_umask())
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~_umask())
    old = None
    try:
        yield tmp
        if is_dir and merge and path.is_dir():
            for entry in sorted(tmp.iterdir()):
                if (path / entry.name).is_dir() and not entry.is_dir():
                    raise DeepwideError(f"{path / entry.name} is a folder where a file is to be written: it is left untouched")
                if entry.is_dir() and (path / entry.name).is_dir():  # merge one level down as well
                    for sub in sorted(entry.iterdir()):
                        os.replace(sub, path / entry.name / sub.name)
                    entry.rmdir()
                else:
                    os.replace(entry, path / entry.name)
            tmp.rmdir()
            return
        if is_dir and path.is_dir():
            if any(path.iterdir()):  # replace: swap first, remove the old folder after
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                os.replace(path, old / "x")
            else:
                path.rmdir()
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if old is not None and not path.exists() and (old / "x").exists():
            os.replace(old / "x", path)  # put the old folder back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def publish_dir(tmp: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Rename the finished folder ``tmp`` to ``dest``; when another process published
    ``dest`` first (a deterministic view or cache both built), ``tmp`` is dropped."""
    try:
        os.replace(tmp, dest)
    except OSError:
        if not Path(dest).is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another job wrote the same folder first


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal configs give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def existing(path: str | os.PathLike, what: str, folder: bool = False) -> Path:
    """``path`` when it is a file (``folder``: a folder); else a DeepwideError "WHAT not found: PATH"."""
    from deepwide.errors import DeepwideError

    path = Path(path)
    if not (path.is_dir() if folder else path.is_file()):
        raise DeepwideError(f"{what} not found: {path}")
    return path


def read_json_object(path: str | os.PathLike, what: str = "JSON file") -> dict[str, Any]:
    """A JSON object from ``path``; a missing file, bad JSON or a non-object is a DeepwideError."""
    from deepwide.errors import DeepwideError

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DeepwideError(f"{what} not found: {path}") from None
    return json_object_arg(text, str(path))


def json_object_arg(text: str, what: str) -> dict[str, Any]:
    """A JSON object from ``text`` (a flag such as ``--config-json``, or a file's content);
    bad JSON or a non-object is a DeepwideError naming ``what``."""
    from deepwide.errors import DeepwideError

    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise DeepwideError(f"{what} is not valid JSON: {err}") from None
    if not isinstance(obj, dict):
        raise DeepwideError(f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_files(paths: Iterable[str | os.PathLike]) -> str:
    """One sha256 over the names and contents of files (folders: their *.py files)."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            # names relative to the hashed folder: the same code in another clone hashes equal
            h.update((f.relative_to(p) if p.is_dir() else Path(f.name)).as_posix().encode())
            h.update(sha256_file(f).encode())
    return h.hexdigest()


def write_parquet(df, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write a pandas DataFrame to Parquet atomically; ``metadata``: more key-value pairs of
    the file's footer (beside pandas'), read back with ``pyarrow.parquet.read_schema(path).metadata``."""
    with atomic_path(path) as tmp:
        if not metadata:
            df.to_parquet(tmp, index=False)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, preserve_index=False)
        kv = {**(table.schema.metadata or {}), **{k.encode(): v.encode() for k, v in metadata.items()}}
        pq.write_table(table.replace_schema_metadata(kv), tmp)



# ----------------------------------------------------------------------------- verified artifacts
#
# Every artifact a later job trusts (targets shards, checkpoints, SUPERB feature caches)
# records the size and sha256 of its content when written; the reader checks them before
# use (sha256 runs at about 1 s per GB on one core of the 2-core dev box, SHA-NI).


def file_checksum(path: str | os.PathLike) -> dict[str, Any]:
    """``{"bytes": size, "sha256": hex}`` of one file."""
    path = Path(path)
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def checksum_mismatch(path: str | os.PathLike, recorded: dict[str, Any]) -> str | None:
    """Why ``path`` does not match ``recorded`` (a :func:`file_checksum`), or None when it does."""
    path = Path(path)
    if not path.is_file():
        return "the file is missing"
    size = path.stat().st_size
    if "bytes" in recorded and size != int(recorded["bytes"]):
        return f"{size} bytes on disk, {int(recorded['bytes'])} when written (truncated or overwritten)"
    if "sha256" in recorded and sha256_file(path) != recorded["sha256"]:
        return "its sha256 differs from the one recorded when it was written (the content changed: a corrupt disk, copy or edit)"
    return None


def verify_checksums(folder: str | os.PathLike, recorded: dict[str, dict[str, Any]], what: str, rerun: str,
                     remove: str | os.PathLike | None = None) -> None:
    """Check every ``{name: checksum}`` in ``recorded`` under ``folder``; the first mismatch is a
    DeepwideError naming the file, why, and what to rerun. ``remove``: a project-made output
    (file or folder) that is deleted on a mismatch, so that the next ``snakemake`` run
    rebuilds it instead of using it again."""
    from deepwide.errors import DeepwideError

    folder = Path(folder)
    for name, rec in sorted(recorded.items()):
        why = checksum_mismatch(folder / name, rec)
        if why is None:
            continue
        note = ""
        if remove is not None:
            remove = Path(remove)
            if remove.is_dir():
                shutil.rmtree(remove, ignore_errors=True)
            else:
                Path(remove).unlink(missing_ok=True)
            note = f"; removed {remove} so that the next `snakemake` run rebuilds it"
        raise DeepwideError(f"corrupt {what}: {folder / name}: {why}{note}; rerun {rerun}")
