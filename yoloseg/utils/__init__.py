"""Small shared utilities: logging, atomic file writes, settings, downloads."""
