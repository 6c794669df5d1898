"""Simulated OCPP 2.0.1 charging stations (``smartgrid-loadgen stations``): the pure meter and
EVSE state machine, one station on the ``ocpp`` package's own charge-point client, a fleet."""
