"""``index.html`` of a report: static, self-contained HTML (standard library only, inline CSS, no script,
no network): figures are PNG files beside it, referenced by relative paths, so the page works from
``file://``.

Sections: the inputs; the run table (:func:`trajkit.archive.display.run_table`); the loss curves; one
``<section class="analysis" id="analysis-NAME">`` per analysis — its figure, scalars with intervals,
parameters (those given marked), provenance and the ``trajkit analyze`` command that reproduces it, or
a ``<div class="failure">`` with its one-line error; the analyses left out, with the reason.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from trajkit.analysis.display import params_html, scalars_html
from trajkit.archive.display import runs_html
from trajkit.version import __version__

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d232a;
       background: #f6f7f9; }
header { background: #1f3b57; color: #fff; padding: 14px 28px; }
header h1 { margin: 0; font-size: 20px; } header p { margin: 4px 0 0; opacity: .85; }
main { padding: 8px 28px 40px; max-width: 1280px; }
section { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 12px 18px; margin: 16px 0; }
h2 { font-size: 17px; margin: 4px 0 8px; } h3 { font-size: 14px; margin: 12px 0 4px; color: #44505c; }
table.trajkit { border-collapse: collapse; font-size: 12.5px; margin: 4px 0; }
table.trajkit th, table.trajkit td { border-bottom: 1px solid #e6e8eb; padding: 3px 8px; text-align: right; }
table.trajkit th { background: #f0f2f5; } table.trajkit tbody th { text-align: left; font-weight: 500; }
table.runs td:first-child, table.runs td:last-child { text-align: left; }
table.params th { text-align: left; } table.params tr.given td { font-weight: 600; }
img.figure { max-width: 100%; border: 1px solid #eceef1; }
pre { background: #f0f2f5; padding: 6px 10px; overflow-x: auto; font-size: 12px; }
.failure { border-left: 4px solid #c0392b; background: #fdecea; padding: 8px 12px; font-family: monospace; }
.notes { color: #7a5b00; font-size: 12.5px; } .muted { color: #68737d; font-size: 12.5px; }
nav a { margin-right: 10px; } .cols { display: flex; flex-wrap: wrap; gap: 24px; }
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _provenance(prov: dict[str, Any]) -> str:
    runs = prov.get("run_ids") or []
    dist = f" ({prov['distribution']} {prov.get('plugin_version')})" if prov.get("distribution") else ""
    rows = [("analysis", f"{prov.get('analysis')} {prov.get('analysis_version', '')}"),
            ("plugin", f"{prov.get('plugin')}{dist}"), ("trajkit", prov.get("trajkit_version")),
            ("runs", f"{len(runs)}: " + ", ".join(str(r)[:8] for r in runs[:12]) + (" …" if len(runs) > 12 else "")),
            ("device", prov.get("device")), ("created", prov.get("created"))]
    unfinished = prov.get("unfinished") or []
    if unfinished:
        rows.append(("unfinished inputs", "; ".join(f"{u.get('path')} ({u.get('state')} at step {u.get('last_step')})"
                                                    for u in unfinished)))
    body = "".join(f"<tr><th>{_e(k)}</th><td style='text-align:left'>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table class='trajkit provenance'>{body}</table>"


def analysis_section(name: str, description: str, entry: dict[str, Any], result: dict[str, Any] | None) -> str:
    """One analysis: figure, scalars, parameters, provenance and command, or its failure box."""
    head = f"<h2>{_e(name)}</h2><p class='muted'>{_e(description)}</p>"
    command = f"<h3>reproduce</h3><pre><code>{_e(entry.get('command', ''))}</code></pre>"
    notes = "".join(f"<p class='notes'>note: {_e(w)}</p>" for w in entry.get("warnings") or [])
    if entry.get("status") != "ok" or result is None:
        body = f"<div class='failure'>{_e(name)} failed: {_e(entry.get('error') or 'no result')}</div>"
        return f"<section class='analysis failed' id='analysis-{_e(name)}'>{head}{body}{notes}{command}</section>"
    figure = (f"<img class='figure' alt='{_e(name)} figure' src='{_e(entry['figure'])}'>" if entry.get("figure")
              else f"<div class='failure'>no figure: {_e(entry.get('figure_error') or 'none drawn')}</div>")
    labels = (result.get("grouping") or {}).get("labels")
    tables = (f"<div class='cols'><div><h3>scalars</h3>{scalars_html(result.get('scalars') or {}, labels)}</div>"
              f"<div><h3>parameters</h3>{params_html(result.get('params') or {}, list(entry.get('given') or {}))}"
              f"</div><div><h3>provenance</h3>{_provenance(result.get('provenance') or {})}</div></div>")
    return f"<section class='analysis' id='analysis-{_e(name)}'>{head}{figure}{notes}{tables}{command}</section>"


def render(*, inputs: Sequence[str], rows: Sequence[dict[str, Any]], waiting: int, analysed: int,
           curves: str | None, curves_error: str | None, sections: Sequence[tuple[str, str]],
           left_out: dict[str, str], updated: str, watch: float | None = None) -> str:
    """The whole page; ``sections`` are ``(name, html)`` of :func:`analysis_section`."""
    refresh = f"<meta http-equiv='refresh' content='{max(1, round(watch))}'>" if watch else ""
    live = f" · live: regenerated every {watch:g} s" if watch else ""
    nav = "".join(f"<a href='#analysis-{_e(n)}'>{_e(n)}</a>" for n, _ in sections)
    waiting_text = f"; {waiting} not done yet (in the table, not analysed)" if waiting else ""
    status = f"{len(rows)} runs, {analysed} analysed{waiting_text} · updated {updated}{live} · trajkit {__version__}"
    figure = (f"<img class='figure' alt='loss curves' src='{_e(curves)}'>" if curves
              else f"<div class='failure'>no loss curves: {_e(curves_error)}</div>")
    skipped = "".join(f"<li><b>{_e(n)}</b>: {_e(why)}</li>" for n, why in left_out.items())
    skipped_html = (f"<section id='left-out'><h2>Not run</h2><p class='muted'>installed analyses whose needs these "
                    f"inputs do not meet</p><ul>{skipped}</ul></section>") if left_out else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
{refresh}<link rel="icon" href="data:,"><title>trajkit report</title><style>{CSS}</style></head>
<body><header><h1>trajkit report</h1><p>{_e(' '.join(inputs))}</p>
<p>{_e(status)}</p>
</header><main><nav>{nav}</nav>
<section id="runs"><h2>Runs</h2>{runs_html(rows)}</section>
<section id="loss-curves"><h2>Loss curves</h2>{figure}</section>
{''.join(s for _, s in sections)}
{skipped_html}
</main></body></html>
"""
