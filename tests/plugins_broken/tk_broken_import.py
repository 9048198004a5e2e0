"""A plugin whose import fails (a dependency that is not installed)."""

import trajkit_frobnicate_not_installed  # noqa: F401
