"""Load generator and local harness: start a grid, drive requests, follow what happens."""
