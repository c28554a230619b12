"""The worker side: the ``Worker`` loops, lanes and their lease books, the executor that runs
one job, idle waits, timeouts, handler threads, the loop monitor and the cron loop."""
