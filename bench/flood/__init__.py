"""Benchmark: the dispatcher under a flood of fake substation ids (``python -m bench.flood``).

The acceptance point (the hardening issue): under a flood of 5,000 fake substation ids the
dispatcher declares no queue for them, real requests keep completing on the real substations,
and its p99 decision time stays within 2x of the quiet figure, measured in the same run.

Design. The dispatcher runs in the bench's own process, on its event loop (uvloop, the startup
heap frozen, as ``python -m dispatcher`` does), built by ``dispatcher.service.build_dispatcher``
and instrumented from outside (``bench.flood.instrument``): its policy is wrapped so that every
decision call is timed with ``perf_counter_ns`` (the production histogram times one decision in
16 into buckets a factor 2-2.5 apart: too coarse to tell 1.5x from 2.5x), and with the thread's
CPU clock beside it (the wall-clock figure minus the time the process waited for a core: on
this shared 2-core machine, what mostly makes the p99 of a 20-40 µs call); its dispatch
histogram is tapped for the latency of every request (received -> assignment confirmed); its
heartbeat handler and admission probes are timed too; the processes' CPU and the dispatcher
thread's preemptions are read from /proc at every phase switch.

In-process rather than a subprocess because only there can each decision be timed without
changing the dispatcher. What it must not share is the load: the requests and the fake
heartbeats come from a process of their own (``bench.flood.load``), so the bench process's CPU
is the dispatcher's. The three substations are real ``python -m substation_worker`` processes
(150/300/600 kW, time x360,000: a session lasts about a tick, 0.1 s), stopped by pid.

Phases, one timeline, requests at a fixed rate straight into ``<ns>.requests`` (persistent,
confirmed) throughout: warm-up, quiet (the baseline), flood (5,000 distinct random ids, every
one within 1.5 s, then every id again each second: 5,000 heartbeats a second), after (the flood
stopped). Afterwards every fake id's queue is probed with a passive declare (and the management
API, if it answers, lists the namespace's queues), then the namespace is deleted.

Safety: it refuses to run against a dispatcher without admission control, and stops the flood
at once if a fake id ever enters the dispatcher's table (a dispatcher without admission would
declare a quorum queue for each id it heard, and thousands of them wedge a broker).
"""
