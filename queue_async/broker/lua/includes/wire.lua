-- includes/wire.lua: the wire formats the scripts share with Python, each named once.
-- queue_async/broker/wire.py has the same names (its places count from 0, these from 1), and
-- tests/lua/test_wire.py holds the two equal.
-- needs:
-- provides: OPT OPTIONAL LEASED LEASED_FIELDS ENQUEUED ENQUEUED_FIELDS COMPLETED
--   COMPLETED_FIELDS ENDED ENDED_FIELDS CARRIED_RESULT_MAX FAIL_DEAD FAIL_ABORTED

-- Places in a job's packed options (see enqueue.lua); "" or absent where the default applies.
local OPT = {priority = 1, delay = 2, at = 3, retries = 4, timeout = 5, keep = 6, ckey = 7,
  climit = 8, ukey = 9, uwindow = 10, urunning = 11, headers = 12, replace = 13}
-- Options stored as job hash fields of the same name when set.
local OPTIONAL = {'retries', 'timeout', 'keep', 'headers'}
-- Places of one leased job's fields, in lease.lua's reply and in a worker's inbox.
local LEASED = {id = 1, task = 2, payload = 3, attempts = 4, enqueued = 5, retries = 6,
  timeout = 7, keep = 8, token = 9, headers = 10, ready = 11}
local LEASED_FIELDS = 11
-- One job in enqueue.lua's batch, and one in complete.lua's.
local ENQUEUED = {id = 1, options = 2, task = 3, payload = 4}
local ENQUEUED_FIELDS = 4
local COMPLETED = {id = 1, token = 2, result = 3, keep = 4}
local COMPLETED_FIELDS = 4
-- One job in a message on the ended channel (see announce_many in includes/final.lua): its
-- task and result when it is done with a result kept of at most CARRIED_RESULT_MAX bytes,
-- else "" and "" (its waiters read the job).
local ENDED = {id = 1, task = 2, result = 3}
local ENDED_FIELDS = 3
local CARRIED_RESULT_MAX = 4096
-- fail.lua's retry delays that mean "no next try".
local FAIL_DEAD, FAIL_ABORTED = -1, -2
