"""trajkit's first-party landscape analyses (registered through the `trajkit.plugins` entry-point group)."""
