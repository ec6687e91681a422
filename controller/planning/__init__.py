"""Planning: what should run where, decided without I/O.

The plan data (`plan`), Clover's objective and the one place λ is applied (`objective`), the
queueing model that predicts p95 (`queueing`), the per-slice options and plan evaluation
(`model`), the exact HiGHS planner (`planner`), the policies it is compared with (`policies`),
the trace-replay simulator (`replay`) and `controller simulate`.
"""
