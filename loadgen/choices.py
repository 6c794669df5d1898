"""The values loadgen's options take, as types: typer turns each into the option's choices
(``--via <http|amqp>``), and mypy checks every use. A light module: the CLI imports it at once."""

from __future__ import annotations

from typing import Literal, get_args

# http: through the gateway; amqp: straight into <ns>.requests, with confirms.
Via = Literal["http", "amqp"]
# How requests arrive over the run (loadgen.profiles).
Profile = Literal["steady", "rush-hour", "spike", "replay"]
PROFILES: tuple[Profile, ...] = get_args(Profile)
# smartgrid-loadgen cluster <action> (loadgen.cluster).
ClusterAction = Literal["up", "down"]
