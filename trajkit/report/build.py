"""Build a report: resolve the inputs, choose the analyses, reuse what the cache holds, compute the rest,
draw the loss curves, write ``index.html``.

Order of work in :func:`build_report`: check the analyses and parameters asked for (nothing is read before
that), open the inputs, choose the analyses, check the output directory (nothing is written before that),
then per analysis reuse its cached result when its key (:func:`trajkit.report.plan.cache_key`) is
unchanged, else compute it — a failure is recorded as its one-line error and the others go on — and
finally the loss curves (cached by the runs' committed trace and snapshot counts) and the page. Every
file is written by temp file or directory and rename, so an interrupted build leaves the last good files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trajkit.analysis.api import run_analysis
from trajkit.analysis.plugins import get_registry
from trajkit.analysis.result import now_iso
from trajkit.archive.format import to_jsonable
from trajkit.errors import TrajkitError
from trajkit.report import cache, page
from trajkit.report.curves import curves_fingerprint, loss_curves
from trajkit.report.inputs import Inputs, resolve_inputs
from trajkit.report.plan import Planned, analyze_command, cache_key, check_request, cli_value, select

CURVES = "figures/loss_curves.png"
#: resolution of the figures written into a report
DPI = 90


@dataclass
class ReportSummary:
    """What a build did: ``index`` (the page), ``computed`` / ``reused`` / ``failed`` (analysis names),
    ``left_out`` (analysis → why it was not run), ``curves_computed`` (the loss curves were redrawn)."""

    out: Path
    index: Path
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)
    curves_computed: bool = False

    def line(self) -> str:
        """One line for the terminal."""
        parts = [f"computed {', '.join(self.computed)}" if self.computed else "computed nothing"]
        if self.reused:
            parts.append(f"reused {', '.join(self.reused)}")
        if self.failed:
            parts.append(f"failed {', '.join(self.failed)}")
        return f"report {self.index}: {'; '.join(parts)}"


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _intact(out: Path, entry: dict[str, Any]) -> bool:
    if entry.get("status") != "ok":
        return True
    files = [out / entry["result"] / "result.json", *([out / entry["figure"]] if entry.get("figure") else [])]
    return all(f.is_file() for f in files)


def _compute(p: Planned, ins: Inputs, out: Path, device: str | None) -> dict[str, Any]:
    """Run ``p`` and write its files into ``out/analyses/NAME``; the manifest entry (:mod:`.cache`)."""
    final = out / "analyses" / p.name
    entry: dict[str, Any] = {"status": "failed", "params": to_jsonable(p.params, strict=True),
                             "given": {k: cli_value(v) for k, v in p.given.items()},
                             "command": analyze_command(p, ins.args), "computed": now_iso(), "warnings": []}
    if p.why_not is not None:
        shutil.rmtree(final, ignore_errors=True)
        return {**entry, "error": f"the inputs do not meet its needs ({p.info.cls.needs}): {p.why_not}"}
    staged = cache.staging_dir(out, p.name)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = run_analysis(p.info, ins.ensemble(), device=device, given=p.given)
            result.save(staged)
        entry["warnings"] = list(dict.fromkeys(_one_line(w.message) for w in caught))   # type: ignore[arg-type]
    except TrajkitError as e:
        shutil.rmtree(staged, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        return {**entry, "error": _one_line(e)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result.plot().savefig(staged / f"{p.name}.png", dpi=DPI)
        entry["figure"] = f"analyses/{p.name}/{p.name}.png"
    except Exception as e:                 # the result stands without its figure; the page says why
        entry["figure_error"] = _one_line(e)
    cache.commit_dir(staged, final)
    return {**entry, "status": "ok", "result": f"analyses/{p.name}"}


def _curves(ins: Inputs, out: Path, manifest: dict[str, Any]) -> bool:
    """Draw the loss curves unless the cached figure has the same runs and counts; True when drawn."""
    key = hashlib.sha256(json.dumps(curves_fingerprint(ins.opened)).encode()).hexdigest()
    old = manifest.get("loss_curves") or {}
    if old.get("key") == key and (old.get("error") or (out / CURVES).is_file()):
        return False
    entry: dict[str, Any] = {"key": key}
    try:
        (out / "figures").mkdir(parents=True, exist_ok=True)
        tmp = out / "figures" / f".loss_curves.{os.getpid()}.png"
        loss_curves(ins.rows, ins.opened).savefig(tmp, dpi=DPI)
        os.replace(tmp, out / CURVES)
    except Exception as e:
        entry["error"] = _one_line(e)
    manifest["loss_curves"] = entry
    return True


def _result_doc(out: Path, entry: dict[str, Any]) -> dict[str, Any] | None:
    if entry.get("status") != "ok":
        return None
    try:
        return json.loads((out / entry["result"] / "result.json").read_text())
    except (OSError, ValueError):
        return None


def build_report(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                 analyses: str | Sequence[str] | None = None, params: dict[str, dict[str, Any]] | None = None,
                 force: bool = False, device: str | None = None, watch: float | None = None) -> ReportSummary:
    """Write the report of ``inputs`` (archives, ensemble directories, globs) into ``out`` (module doc).

    ``analyses``: names (a list or comma-separated) or None for every analysis that applies;
    ``params``: ``{analysis: {key: value}}``; ``force``: replace an ``out`` that is a file, another report
    or other files; ``device``: where the kernels run; ``watch``: the page reloads itself every so many
    seconds (what ``--watch`` sets).
    """
    reg = get_registry()
    names, params = check_request(reg, analyses if analyses is None or isinstance(analyses, str) else list(analyses),
                                  params or {})
    ins = resolve_inputs([str(a) for a in inputs])
    planned, left_out = select(reg, names, params, ins.ensemble())
    out = Path(out)
    manifest = cache.open_out(out, ins.args, force)
    out.mkdir(parents=True, exist_ok=True)
    summary = ReportSummary(out, out / "index.html", left_out=left_out)
    fingerprint = ins.fingerprint()
    for p in planned:
        key = cache_key(p, fingerprint)
        old = manifest["entries"].get(p.name)
        if old is not None and old.get("key") == key and _intact(out, old):
            summary.reused.append(p.name)
        else:
            manifest["entries"][p.name] = {**_compute(p, ins, out, device), "key": key}
            cache.save_manifest(out, manifest)
            summary.computed.append(p.name)
        if manifest["entries"][p.name]["status"] != "ok":
            summary.failed.append(p.name)
    summary.curves_computed = _curves(ins, out, manifest)
    sections = [(p.name, page.analysis_section(p.name, p.info.cls.description, manifest["entries"][p.name],
                                               _result_doc(out, manifest["entries"][p.name]))) for p in planned]
    updated = now_iso()
    curves = manifest["loss_curves"] or {}
    html = page.render(inputs=ins.args, rows=ins.rows, waiting=ins.waiting, analysed=len(ins.archives),
                       curves=None if curves.get("error") else CURVES, curves_error=curves.get("error"),
                       sections=sections, left_out=left_out, updated=updated, watch=watch)
    manifest["builds"] = [*manifest["builds"], {
        "at": updated, "computed": summary.computed, "reused": summary.reused,
        "curves": "computed" if summary.curves_computed else "reused",
        "runs": [[r["name"], r["n_snapshots"]] for r in ins.rows]}][-cache.MAX_BUILDS:]
    manifest["rows"] = to_jsonable(ins.rows, strict=True)
    cache.save_manifest(out, manifest)
    cache.write_text_atomic(summary.index, html)
    return summary


def watch_report(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, seconds: float,
                 **kw: Any) -> Iterator[ReportSummary]:
    """Rebuild the report every ``seconds`` (forever; stop by closing the generator or Ctrl-C), yielding
    each build's summary; the page reloads itself as often. Each build reads only committed snapshots."""
    while True:
        yield build_report(inputs, out, watch=seconds, **kw)
        time.sleep(seconds)
