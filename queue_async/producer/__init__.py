"""The producer side: ``Queue`` (a facade over a ``Broker`` and the task registry), tasks,
job specs and their encoding, handles, result waiters, cron schedules."""
