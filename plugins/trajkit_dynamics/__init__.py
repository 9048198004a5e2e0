"""trajkit's first-party dynamics analyses (registered through the `trajkit.plugins` entry-point group).

One module per observable: :mod:`~trajkit_dynamics.overlaps` (``overlaps``),
:mod:`~trajkit_dynamics.relaxation` (``relaxation``), :mod:`~trajkit_dynamics.aging` (``aging``),
:mod:`~trajkit_dynamics.chi4` (``chi4``), :mod:`~trajkit_dynamics.loss` (``loss``),
:mod:`~trajkit_dynamics.critical_width` (``critical_width``), :mod:`~trajkit_dynamics.phase_diagram`
(``phase_diagram``). Each module holds the
physics as small pure functions and the :class:`~trajkit.analysis.Analysis` that applies them to
archives; :mod:`~trajkit_dynamics.measure` runs the core's pair kernels for all of them. Definitions
follow OBSERVABLES.md; trajkit's own choices are stated in each module's docstring.
"""

from trajkit.analysis import hookimpl

__version__ = "1.0.0"


@hookimpl
def trajkit_register_analyses(register):
    """Register the dynamics analyses."""
    from trajkit_dynamics.aging import Aging
    from trajkit_dynamics.chi4 import Chi4
    from trajkit_dynamics.critical_width import CriticalWidth
    from trajkit_dynamics.loss import LossDynamics
    from trajkit_dynamics.overlaps import Overlaps
    from trajkit_dynamics.phase_diagram import PhaseDiagram
    from trajkit_dynamics.relaxation import Relaxation

    for cls in (Overlaps, Relaxation, Aging, Chi4, LossDynamics, CriticalWidth, PhaseDiagram):
        register(cls)
