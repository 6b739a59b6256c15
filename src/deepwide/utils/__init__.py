"""Small shared helpers: atomic writes, hashing, canonical JSON, config slices."""

from deepwide.utils.io import (  # noqa: F401
    atomic_path,
    atomic_write_text,
    canonical_json,
    hash_files,
    sha256_file,
    write_parquet,
)
