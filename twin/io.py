"""Files at the edges: reading structures, writing results without leaving partial files behind."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import ase.io
from ase import Atoms

from twin.structures import check_atoms


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; rename it onto `path` when the block succeeds, else remove it.

    `path` is thus either absent (or its old self) or the whole new file, never a partial one.
    """
    path = Path(path)
    # A fresh name rather than tempfile.mkstemp, so the file gets the usual permissions (umask), not 0600.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_dataset_atomic(ds, path: str | os.PathLike) -> Path:
    """Write `ds` as netCDF4 (engine h5netcdf) to `path`, atomically (see `atomic_path`). Returns `path`.

    Example: write_dataset_atomic(simulate(atoms, ...), "haadf.nc")
    """
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")
    return Path(path)


def read_structure(path: str | os.PathLike) -> Atoms:
    """The structure in `path` (any format ase.io.read knows; the last image of a trajectory).

    Raises ValueError with a one-line message naming the file when it is missing, cannot be parsed,
    has no atoms or lacks the orthorhombic cell periodic in x and y that the simulators need
    (`twin.structures.check_atoms`).

    Example: atoms = read_structure("graphene.xyz")  # extended XYZ keeps the cell
    """
    path = Path(path)
    if not path.is_file():
        reason = "is a directory" if path.is_dir() else "does not exist"
        raise ValueError(f"structure file {str(path)!r} {reason}")
    try:
        atoms = ase.io.read(path)
    except Exception as e:  # ase raises many types for bad files; all mean "cannot parse".
        detail = " ".join(str(e).split()) or f"the {path.suffix or 'format'} parser failed ({type(e).__name__})"
        raise ValueError(f"structure file {str(path)!r} could not be read: {detail}") from e
    if isinstance(atoms, list):
        if not atoms:
            raise ValueError(f"structure file {str(path)!r} holds no structure")
        atoms = atoms[-1]
    try:
        check_atoms(atoms)
    except ValueError as e:
        raise ValueError(f"structure file {str(path)!r}: {e}") from e
    return atoms


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path:
    """Keep JAX's compiled programs on disk so a second run does not compile again.

    path: the cache folder; default $XDG_CACHE_HOME/twin/jax (or ~/.cache/twin/jax). Returns it.
    """
    import jax

    if path is None:
        path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "twin" / "jax"
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path
