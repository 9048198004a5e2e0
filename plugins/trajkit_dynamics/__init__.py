"""trajkit's first-party dynamics analyses (registered through the `trajkit.plugins` entry-point group)."""
