"""The generator: a recipe's samples, shard by shard, on a Dask cluster, resumable after any interruption.

Shard k holds samples [k S, (k + 1) S) for the shard size S; each shard is a pure function of (recipe, k, S)
and is written atomically, so a shard file that exists is complete. The manifest lists the finished
shards with their sha256; `resume` keeps every finished shard (verified) and makes the others, so an
interrupted run (even by SIGKILL) completes to the same bytes as an uninterrupted one, whatever the number of
workers.
"""

from __future__ import annotations

import math
from importlib.metadata import version
from pathlib import Path

from twin.generate.store import FORMAT, MANIFEST, read_manifest, sha256, shard_name, write_manifest, write_shard

SCHEDULER_TIMEOUT_S = 5.0  # [s] for reaching a --scheduler
CLOSE_TIMEOUT_S = 60.0  # [s] for shutting a Dask client and local cluster down


def make_shard(recipe, index: int, shard_size: int, n_samples: int, directory: str) -> tuple[str, dict]:
    """Generate and write shard `index`; returns (file name, manifest entry)."""
    from twin.generate.sample import generate_sample

    first = index * shard_size
    count = min(shard_size, n_samples - first)
    samples = [generate_sample(recipe, first + i) for i in range(count)]
    classes = [s.pop("classes") for s in samples][0]
    attrs = {"recipe": recipe.name, "recipe_hash": _hash(recipe), "first": first, "count": count,
             "classes": classes}
    name = shard_name(index)
    checksum = write_shard(samples, first, Path(directory) / name, attrs)
    return name, {"first": first, "count": count, "sha256": checksum}


def _hash(recipe) -> str:
    from twin.generate.recipe import recipe_hash

    return recipe_hash(recipe)


def prepare(recipe, directory: Path, n_samples: int, shard_size: int, resume: bool) -> dict:
    """The manifest to continue from, after checking that `directory` may receive this dataset."""
    manifest = read_manifest(directory)
    entries = [p for p in directory.iterdir() if not p.name.startswith(".")] if directory.is_dir() else []
    if entries and manifest is None:
        raise ValueError(f"--out {str(directory)!r} holds files that are not a twin dataset; give a new directory")
    fresh = {"format": FORMAT, "twin_version": version("twin"), "recipe": recipe.to_dict(),
             "recipe_hash": _hash(recipe), "n_samples": n_samples, "shard_size": shard_size, "shards": {},
             "complete": False}
    if manifest is None:
        return fresh
    if not resume:
        raise ValueError(f"--out {str(directory)!r} already holds a dataset; add --resume to complete it or give a "
                         "new directory")
    for key in ("recipe_hash", "n_samples", "shard_size"):
        if manifest.get(key) != fresh[key]:
            raise ValueError(f"--resume: the dataset in {str(directory)!r} has {key}={manifest.get(key)!r}, this run "
                             f"{fresh[key]!r}; resume with the same recipe, --n and --shard-size")
    for path in directory.glob(".*.tmp"):  # left by a killed writer
        path.unlink()
    for name in sorted(p.name for p in directory.glob("shard-*.h5")):
        index = int(name[6:11])
        entry = manifest["shards"].get(name)
        first = index * shard_size
        checksum = sha256(directory / name)
        if entry is None or entry["sha256"] == checksum:  # a shard renamed into place is whole
            fresh["shards"][name] = {"first": first, "count": min(shard_size, n_samples - first), "sha256": checksum}
    return fresh


def generate(recipe, directory, *, n_samples: int | None = None, shard_size: int = 16, workers: int = 2,
             scheduler: str | None = None, resume: bool = False, progress=None) -> dict:
    """Make the dataset of `recipe` in `directory`; returns the manifest. workers = 0 runs in this process;
    otherwise on a new dask.distributed.LocalCluster of `workers` processes, or on the cluster at
    `scheduler`. progress(done_samples, total) is called after each shard."""
    directory = Path(directory)
    n_samples = recipe.n_samples if n_samples is None else n_samples
    for name, value, low in (("n_samples", n_samples, 1), ("shard_size", shard_size, 1), ("workers", workers, 0)):
        if not (isinstance(value, int) and value >= low):
            raise ValueError(f"{name}={value!r} is not allowed; give an integer >= {low}")
    manifest = prepare(recipe, directory, n_samples, shard_size, resume)
    directory.mkdir(parents=True, exist_ok=True)
    write_manifest(directory, manifest)
    todo = [k for k in range(math.ceil(n_samples / shard_size)) if shard_name(k) not in manifest["shards"]]
    done = sum(e["count"] for e in manifest["shards"].values())

    def finished(name, entry):
        nonlocal done
        manifest["shards"][name] = entry
        done += entry["count"]
        write_manifest(directory, manifest)
        if progress:
            progress(done, n_samples)

    if workers == 0 and scheduler is None:
        for k in todo:
            finished(*make_shard(recipe, k, shard_size, n_samples, str(directory)))
    else:
        _run_on_dask(recipe, todo, shard_size, n_samples, directory, workers, scheduler, finished)
    manifest["complete"] = True
    write_manifest(directory, manifest)
    return manifest


def _run_on_dask(recipe, todo, shard_size, n_samples, directory, workers, scheduler, finished):
    from distributed import Client, LocalCluster, as_completed

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=f"{SCHEDULER_TIMEOUT_S}s")
        except (OSError, TimeoutError) as e:
            raise ValueError(f"--scheduler {scheduler!r} did not answer within {SCHEDULER_TIMEOUT_S:g} s ({e})") \
                from None
        cluster = None
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    try:
        futures = [client.submit(make_shard, recipe, k, shard_size, n_samples, str(directory.resolve()),
                                 pure=False) for k in todo]
        for future in as_completed(futures):
            finished(*future.result())
    finally:
        client.close(timeout=CLOSE_TIMEOUT_S)
        if cluster is not None:
            cluster.close(timeout=CLOSE_TIMEOUT_S)  # bounded: a stuck worker must not hold the run open


def verify(directory) -> list[str]:
    """The problems of the dataset in `directory` (missing or changed shards, incomplete run); [] if none."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        return [f"{directory / MANIFEST} is missing"]
    problems = [] if manifest.get("complete") else ["the run is incomplete; finish it with --resume"]
    expected = math.ceil(manifest["n_samples"] / manifest["shard_size"])
    for k in range(expected):
        name = shard_name(k)
        entry = manifest["shards"].get(name)
        if entry is None or not (directory / name).is_file():
            problems.append(f"{name} is missing")
        elif sha256(directory / name) != entry["sha256"]:
            problems.append(f"{name} does not match its checksum")
    return problems
