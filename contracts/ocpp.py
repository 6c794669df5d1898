"""What a charging station needs to reach its substation over OCPP 2.0.1: the WebSocket
subprotocol and the station ids the endpoint ``/ocpp/<station_id>`` takes. No I/O here."""

from __future__ import annotations

SUBPROTOCOL = "ocpp2.0.1"
# OCPP 2.0.1 identities are at most 48 characters (the HTTP Basic user name of security profiles
# 1 and 2); only URL-unreserved ones, so that the id needs no decoding anywhere it is shown.
STATION_ID_CHARS = "A-Za-z0-9._~-"
MAX_STATION_ID = 48
