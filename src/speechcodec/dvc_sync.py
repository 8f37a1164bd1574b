"""Keep Snakemake and DVC agreeing on one checkout.

The two tools decide "current" differently: DVC compares content hashes and parameter values
with ``dvc.lock``; Snakemake compares modification times (and the provenance it recorded for the
outputs it made itself). Left alone, each takes the other's work for stale. The Snakefile uses
this module at both ends of a run:

- before planning, :func:`write_params` keeps one small file of settings per stage, rewritten only
  when the settings change (a changed setting is then a newer input to Snakemake, as it is a
  changed parameter to DVC), and :func:`follow_dvc` makes what DVC holds as current look current
  to Snakemake too (after ``dvc repro`` or ``dvc pull``, outputs may be older than their inputs);
- after a successful run, :func:`record_in_dvc` records what Snakemake made in ``dvc.lock``
  (``dvc commit``), so ``dvc status`` is clean and ``dvc repro`` plans nothing.

Both do nothing outside a DVC repository (no ``.dvc/``) or without DVC installed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

# Snakemake dates a directory output by this file inside it; DVC ignores it (.dvcignore).
SNAKEMAKE_STAMP = ".snakemake_timestamp"
_STEP_NS = 1_000_000  # an output made current is dated 1 ms after its newest input


def write_params(path: str | Path, values: Mapping) -> bool:
    """Write ``values`` as JSON to ``path`` unless it already holds exactly them (its date then
    stays, so an unchanged setting never looks new). Returns whether the file was written."""
    path = Path(path)
    text = json.dumps(values, sort_keys=True, indent=1) + "\n"
    try:
        if path.read_text() == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_text(text)
    os.replace(part, path)
    return True


def _is_dvc_project(root: Path) -> bool:
    return (root / ".dvc").is_dir()


def _open_repo(root: Path):
    """DVC's repository object, or None where DVC is not installed."""
    try:
        from dvc.repo import Repo
    except ImportError:
        return None
    return Repo(str(root))


def _is_params(dependency) -> bool:
    from dvc.dependency.param import ParamsDependency

    return isinstance(dependency, ParamsDependency)


def _snakemake_mtime_ns(path: Path) -> int | None:
    """The date Snakemake compares: a directory's stamp file when it has one, else the path's own."""
    try:
        if path.is_dir() and not path.is_symlink():
            stamp = path / SNAKEMAKE_STAMP
            if stamp.exists():
                return stamp.stat().st_mtime_ns
        return path.lstat().st_mtime_ns
    except FileNotFoundError:
        return None


def _newest_ns(path: Path) -> int | None:
    """The newest date Snakemake could see on ``path``: for a directory, anything inside it too
    (Snakemake's inputs may be the files and folders, dated by their stamps, within a folder DVC
    names as one dependency)."""
    newest = _snakemake_mtime_ns(path)
    if newest is not None and path.is_dir():
        for folder, _, names in os.walk(path):
            for name in names:
                try:
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime_ns)
                except FileNotFoundError:
                    pass
    return newest


def _date(path: Path, ns: int) -> None:
    if path.is_dir():
        stamp = path / SNAKEMAKE_STAMP
        stamp.touch()
        os.utime(stamp, ns=(ns, ns))
    else:
        os.utime(path, ns=(ns, ns), follow_symlinks=False)


def _overlap(a: Path, b: Path) -> bool:
    """One path is the other or inside it (DVC may name a folder of outputs as one input)."""
    return a == b or a in b.parents or b in a.parents


def follow_dvc(root: str | Path = ".", extra_inputs: Mapping[str, Iterable[str]] | None = None,
               extra_outputs: Mapping[str, Iterable[str]] | None = None) -> list[str]:
    """Date the outputs of every stage DVC holds as current (locked, unchanged) after their
    inputs, so that Snakemake holds them as current too. ``extra_inputs`` and ``extra_outputs``
    map a stage name to files only Snakemake knows (the settings files of :func:`write_params`,
    its benchmark records). Only dates change: a file's own, or for a directory the stamp file
    Snakemake reads and DVC ignores. Returns the outputs re-dated, upstream first."""
    root = Path(root)
    if not _is_dvc_project(root) or not (root / "dvc.lock").is_file():
        return []
    repo = _open_repo(root)
    if repo is None:
        return []
    extra_inputs, extra_outputs = extra_inputs or {}, extra_outputs or {}
    dated: list[str] = []
    with repo:
        changed = set(repo.status())
        pending = {s.name: s for s in repo.index.stages if s.name not in changed and s.outs}
        outs_of = {name: [Path(o.fs_path) for o in s.outs] for name, s in pending.items()}
        while pending:
            # Upstream first: a stage waits while a pending stage makes (part of) one of its inputs.
            ready = [s for s in pending.values()
                     if not any(_overlap(Path(d.fs_path), out)
                                for d in s.deps if not _is_params(d)
                                for other in pending if other != s.name for out in outs_of[other])]
            if not ready:  # a cycle, which DVC itself refuses; leave the rest alone
                break
            for stage in ready:
                del pending[stage.name]
                # Parameters are config.yaml to DVC; Snakemake sees them as settings files.
                inputs = [Path(d.fs_path) for d in stage.deps if not _is_params(d)]
                inputs += [root / p for p in extra_inputs.get(stage.name, ())]
                dates = [t for t in map(_newest_ns, inputs) if t is not None]
                if not dates:
                    continue
                newest = max(dates)
                outputs = [Path(o.fs_path) for o in stage.outs if not o.persist]  # persist: training logs
                outputs += [root / p for p in extra_outputs.get(stage.name, ())]
                for path in outputs:
                    own = _snakemake_mtime_ns(path)
                    if own is not None and own <= newest:
                        _date(path, newest + _STEP_NS)
                        dated.append(os.path.relpath(path, root))
    return dated


def record_in_dvc(root: str | Path, outputs: Iterable[str]) -> list[str]:
    """After Snakemake has made ``outputs`` current: record in ``dvc.lock`` (``dvc commit``)
    every stage all of whose outputs are among them and which DVC sees as changed. Returns the
    stages recorded."""
    root = Path(root)
    if not _is_dvc_project(root):
        return []
    repo = _open_repo(root)
    if repo is None:
        return []
    made = {Path(root, o).resolve() for o in outputs}
    with repo:
        covered = [s for s in repo.index.stages
                   if s.outs and all(Path(o.fs_path).resolve() in made for o in s.outs if not o.persist)]
        if not covered:
            return []
        changed = set(repo.status(targets=[s.addressing for s in covered]))
        recorded = []
        for stage in covered:
            if stage.name in changed:
                repo.commit(stage.addressing, force=True, relink=False)  # leave the files (and their dates) be
                recorded.append(stage.name)
    return recorded
