"""CoDi Studio engine."""
