"""trajkit's analysis core: the plugin contract, results, ensembles, time machinery and pair kernels.

Public, stable names for plugin authors::

    from trajkit.analysis import Analysis, Param, Result, hookimpl

Modules: :mod:`~trajkit.analysis.hookspecs` (hook specifications), :mod:`~trajkit.analysis.plugins`
(discovery through the ``trajkit.plugins`` entry-point group), :mod:`~trajkit.analysis.contract`
(:class:`Analysis`, :class:`Param`, :class:`Context`), :mod:`~trajkit.analysis.result` (:class:`Result`),
:mod:`~trajkit.analysis.ensemble` (:func:`open_ensemble`),
:mod:`~trajkit.analysis.times` (waiting times, two-time pairs, lags), :mod:`~trajkit.analysis.kernels`
(streaming pair sums and the blocked Gram matrix), :mod:`~trajkit.analysis.api` (:func:`analyze`,
:func:`list_analyses`, :func:`load_result`). See :mod:`trajkit.analysis.contract` for a complete example
analysis.
"""

from trajkit.analysis import kernels, plotting, times
from trajkit.analysis.api import analyze, list_analyses, load_result
from trajkit.analysis.contract import Analysis, Context, Param
from trajkit.analysis.ensemble import Ensemble, open_ensemble
from trajkit.analysis.hookspecs import hookimpl, hookspec
from trajkit.analysis.result import Result

__all__ = ["Analysis", "Context", "Ensemble", "Param", "Result", "analyze", "hookimpl", "hookspec", "kernels",
           "list_analyses", "load_result", "open_ensemble", "plotting", "times"]
