"""Importing a directory of PyTorch ``state_dict`` checkpoints into a trajectory archive.

Which files: every ``*.pt``, ``*.pth``, ``*.ckpt`` and ``*.bin`` file in the directory (not its
subdirectories). Which step: by default **the last integer in the file's stem** — ``step_000100.pt``,
``ckpt-100.pth`` and ``epoch3_step100.pt`` are all step 100 (a file whose stem holds no integer is
refused). With ``pattern`` (a Python regex searched in the file *name*), only matching files are imported
and the step is its group named ``step``, else its first group, else the whole match. An ``epoch``
(a named group ``epoch`` in ``pattern``, else ``epoch<K>`` in the stem) fills ``snapshots/epoch``.

Loading: only ``torch.load(f, map_location="cpu", weights_only=True)`` — a pickle of arbitrary objects is
refused by torch's restricted unpickler and nothing in it executes. Each file must be a plain mapping
``name -> Tensor`` with the same names and shapes as the first (sorted by step). Floating tensors become
the parameter vector, in the first file's key order, converted to float32 (float buffers such as BatchNorm
running statistics are included); integer and bool buffers (``num_batches_tracked``) are skipped and
listed in metadata ``/import/skipped``. ``snapshots/time`` is NaN (wall time is unknown).

On any refusal nothing is left behind: the partly written output is removed.

``metadata`` (``trajkit import --set KEY=VALUE``, dotted keys) is merged into the archive's metadata, so
imported runs carry what the analyses group by (``dynamics.temperature``: one group per temperature) or
need (``dynamics.kind = "langevin"``, ``dynamics.lr`` and ``dataset.n_train``: the free-diffusion reference
of ``overlaps`` / ``relaxation``); keys the import records itself (:data:`RESERVED_KEYS`) are refused.

>>> trajkit.archive.import_checkpoints("checkpoints/", "run.trajkit")      # doctest: +SKIP
>>> trajkit.archive.import_checkpoints("ckpts/", "T1e-4.trajkit", {"dynamics.temperature": 1e-4})  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trajkit.archive.layout import layout_from_named_parameters
from trajkit.archive.metadata import deep_merge, expand_dotted
from trajkit.archive.writer import ArchiveWriter
from trajkit.errors import ArchiveError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
_INT = re.compile(r"\d+")
_EPOCH = re.compile(r"epoch[_-]?(\d+)", re.IGNORECASE)


def checkpoint_steps(directory: str | os.PathLike,
                     pattern: str | None = None) -> list[tuple[int, Path, int | None]]:
    """``[(step, file, epoch), ...]`` sorted by step for the checkpoints in ``directory`` (see module doc)."""
    d = Path(directory)
    if not d.is_dir():
        raise ArchiveError(f"{d}: not a directory of checkpoints; pass the folder holding the .pt files")
    try:
        rx = re.compile(pattern) if pattern is not None else None
    except re.error as e:
        raise ArchiveError(f"--pattern {pattern!r} is not a valid regular expression ({e})") from None
    found: list[tuple[int, Path, int | None]] = []
    for f in sorted(d.iterdir()):
        if not f.is_file() or f.suffix.lower() not in CHECKPOINT_SUFFIXES:
            continue
        epoch_match = _EPOCH.search(f.stem)
        epoch = int(epoch_match.group(1)) if epoch_match else None
        if rx is None:
            ints = _INT.findall(f.stem)
            if not ints:
                raise ArchiveError(f"{f}: file name carries no step (no integer in {f.stem!r}); rename it "
                                   "like step_000100.pt, move it out, or pass --pattern")
            step = int(ints[-1])
        else:
            m = rx.search(f.name)
            if m is None:
                continue
            groups = m.groupdict()
            text = groups.get("step") or (m.group(1) if rx.groups else m.group(0))
            if not text or not text.isdigit():
                raise ArchiveError(f"{f}: --pattern {pattern!r} matched {m.group(0)!r}, which is not an "
                                   "integer step; capture the step digits in a group, e.g. 'step_(\\d+)'")
            step = int(text)
            if groups.get("epoch") and groups["epoch"].isdigit():
                epoch = int(groups["epoch"])
        found.append((step, f, epoch))
    if not found:
        what = f"matching {pattern!r}" if pattern else f"with suffix {', '.join(CHECKPOINT_SUFFIXES)}"
        raise ArchiveError(f"{d}: no checkpoint files {what}; nothing to import")
    found.sort(key=lambda t: t[0])
    for (s0, f0, _), (s1, f1, _) in itertools.pairwise(found):
        if s0 == s1:
            raise ArchiveError(f"{d}: {f0.name} and {f1.name} both carry step {s0}; remove one (duplicate "
                               "steps are refused)")
    return found


def load_state_dict(f: Path) -> dict[str, Any]:
    """A checkpoint's ``name -> Tensor`` mapping, loaded with ``weights_only=True`` (nothing executes)."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's note on pickle protocols
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ArchiveError(f"{f}: torch.load(weights_only=True) refused it ({_reason(e)}); only plain "
                           "state_dict files (name -> tensor) are imported; nothing in the file was run"
                           ) from None
    if not isinstance(obj, Mapping):
        raise ArchiveError(f"{f}: holds a {type(obj).__name__}, not a state_dict mapping name -> tensor; "
                           "save model.state_dict()")
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise ArchiveError(f"{f}: entry {k!r} is a {type(v).__name__}, not a tensor; a plain state_dict "
                               "is needed (save model.state_dict(), not a dict of model/optimizer states)")
        if v.is_complex():
            raise ArchiveError(f"{f}: entry {k!r} is complex ({v.dtype}); only real tensors can be imported")
    return dict(obj)


def import_checkpoints(directory: str | os.PathLike, out: str | os.PathLike,
                       metadata: dict[str, Any] | None = None, pattern: str | None = None) -> Path:
    """Write the checkpoints of ``directory`` as snapshots of a new archive ``out``; returns its path.

    Parameter vector ``w[k]`` = the floating tensors of checkpoint ``k`` flattened in the first file's key
    order (float32); layout from their names and shapes (:func:`layout_from_named_parameters`).
    """
    import torch

    _check_user_metadata(metadata or {})
    files = checkpoint_steps(directory, pattern)
    out = Path(out)
    if out.exists():
        raise ArchiveError(f"{out}: already exists; choose a new output path (import never overwrites)")
    first = load_state_dict(files[0][1])
    names = [k for k, v in first.items() if v.is_floating_point()]
    skipped = [k for k, v in first.items() if not v.is_floating_point()]
    if not names:
        raise ArchiveError(f"{files[0][1]}: holds no floating-point tensors; nothing to import")
    shapes = {k: tuple(v.shape) for k, v in first.items()}
    layout = layout_from_named_parameters([(k, first[k]) for k in names])
    n_params = sum(e["size"] for e in layout)
    meta = {"schedule": {"kind": "explicit", "steps": [s for s, _, _ in files]},
            "import": {"source": str(Path(directory).resolve()), "files": len(files), "pattern": pattern,
                       "skipped": skipped}}
    if metadata:
        meta = deep_merge(meta, expand_dotted(metadata))
    writer = ArchiveWriter(out, n_params, meta, layout, resume="never")
    try:
        for i, (step, f, epoch) in enumerate(files):
            sd = first if i == 0 else load_state_dict(f)
            _check_same(sd, shapes, f, files[0][1])
            flat = torch.cat([sd[k].detach().reshape(-1).to(torch.float32) for k in names]).numpy()
            writer.append(step, flat, time=float("nan"), epoch=None if epoch is None else float(epoch))
        writer.close()
    except BaseException:
        writer.abort()
        shutil.rmtree(out, ignore_errors=True)
        raise
    return out


#: metadata the importer and the writer own (``--set`` may not replace them)
RESERVED_KEYS = ("format", "format_version", "run_id", "created", "versions", "layout", "schedule", "import",
                 "model.n_params")


def _check_user_metadata(metadata: dict[str, Any]) -> None:
    """Refuse user metadata (``trajkit import --set``) that would replace what the import itself records."""
    for key in metadata:
        clash = next((r for r in RESERVED_KEYS if key == r or key.startswith(r + ".")), None)
        if clash is not None:
            raise ArchiveError(f"--set {key}=...: {clash!r} is recorded by the import itself and cannot be set; "
                               "attach run metadata such as dynamics.temperature, dynamics.lr or dataset.n_train")


def _check_same(sd: dict[str, Any], shapes: dict[str, tuple[int, ...]], f: Path, ref: Path) -> None:
    if set(sd) != set(shapes):
        extra, missing = sorted(set(sd) - set(shapes)), sorted(set(shapes) - set(sd))
        raise ArchiveError(f"{f}: tensor names differ from {ref.name} (extra {extra[:3]}, missing "
                           f"{missing[:3]}); all checkpoints must come from the same model")
    for k, v in sd.items():
        if tuple(v.shape) != shapes[k]:
            raise ArchiveError(f"{f}: tensor {k!r} has shape {list(v.shape)} but {list(shapes[k])} in "
                               f"{ref.name}; all checkpoints must come from the same model")


def _reason(e: Exception) -> str:
    """The informative line of a torch.load error (the unsupported global), shortened."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    keys = ("GLOBAL", "Unsupported", "nsupported operand", "WeightsUnpickler error")
    informative = (ln for ln in lines if any(k in ln for k in keys))
    pick = next(informative, lines[0] if lines else type(e).__name__)
    pick = pick.removeprefix("WeightsUnpickler error: ")
    return pick if len(pick) < 140 else pick[:137] + "..."
