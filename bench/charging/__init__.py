"""Charging benchmark: real ACN days on one substation, every sharing against the offline optimum
(no broker)."""
