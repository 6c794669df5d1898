"""Balance benchmark: the real dispatch policies on simulated, stale load (no broker)."""
