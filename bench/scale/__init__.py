"""Scale benchmark: the load table and headroom's decision at 10 to 10,000 substations."""
