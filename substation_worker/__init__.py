"""One substation: consumes its queue, simulates charging in its capacity, heartbeats its load."""
