"""OCPP 2.0.1: the substation worker as the CSMS its charging stations connect to (docs/ocpp.md).

``registry`` holds the connected stations and their EVSEs (pure, no I/O), ``station`` answers
one station's messages, ``listener`` accepts the stations' WebSockets.
"""
