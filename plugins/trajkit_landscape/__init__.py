"""trajkit's first-party landscape analyses (registered through the `trajkit.plugins` entry-point group).

One module per analysis: :mod:`~trajkit_landscape.minima` (``minima``: aligned distances, clustering,
ultrametricity, P(q)), :mod:`~trajkit_landscape.interpolation` (``interpolation``: linear paths and
barriers, raw and aligned), :mod:`~trajkit_landscape.rugosity` (``rugosity``: probes around minima and
their correlation with the generalisation gap). The physics lives in :mod:`trajkit.landscape`;
:mod:`~trajkit_landscape.common` holds what the three share (snapshot rows, checks, the rebuilt loss).
"""

from trajkit.analysis import hookimpl

__version__ = "1.0.0"


@hookimpl
def trajkit_register_analyses(register):
    """Register the three landscape analyses."""
    from trajkit_landscape.interpolation import Interpolation
    from trajkit_landscape.minima import Minima
    from trajkit_landscape.rugosity import Rugosity

    for cls in (Minima, Interpolation, Rugosity):
        register(cls)
