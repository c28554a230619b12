"""queue_async: an asyncio-native background job queue on Redis and Valkey."""

from queue_async.admin import Admin
from queue_async.codec import Codec, JsonCodec
from queue_async.context import JobContext
from queue_async.exceptions import (
    BrokerConnectionError,
    BrokerError,
    ConfigurationError,
    EncodeError,
    EnqueueIncomplete,
    Fatal,
    JobAborted,
    JobCancelled,
    JobError,
    JobFailed,
    JobNotFound,
    JobTimeout,
    NotReplicated,
    PayloadTooLarge,
    QueueAsyncError,
    Retry,
    TaskNotRegistered,
)
from queue_async.models import (
    CronInfo,
    Job,
    JobPage,
    JobStatus,
    QueueStats,
    RunningJob,
    WorkerHeartbeat,
    WorkerInfo,
)
from queue_async.options import Durability, EnqueueOptions, TaskOptions, WorkerSettings
from queue_async.producer.handle import JobHandle
from queue_async.producer.queue import Queue
from queue_async.producer.tasks import JobSpec, Task, TaskCall
from queue_async.worker.executor import JobObserver
from queue_async.worker.worker import Worker

ConnectionError = BrokerConnectionError

__all__ = [
    "Admin",
    "BrokerConnectionError",
    "BrokerError",
    "Codec",
    "ConfigurationError",
    "ConnectionError",
    "CronInfo",
    "Durability",
    "EncodeError",
    "EnqueueIncomplete",
    "EnqueueOptions",
    "Fatal",
    "Job",
    "JobAborted",
    "JobCancelled",
    "JobContext",
    "JobError",
    "JobFailed",
    "JobHandle",
    "JobNotFound",
    "JobObserver",
    "JobPage",
    "JobSpec",
    "JobStatus",
    "JobTimeout",
    "JsonCodec",
    "NotReplicated",
    "PayloadTooLarge",
    "Queue",
    "QueueAsyncError",
    "QueueStats",
    "Retry",
    "RunningJob",
    "Task",
    "TaskCall",
    "TaskNotRegistered",
    "TaskOptions",
    "Worker",
    "WorkerHeartbeat",
    "WorkerInfo",
    "WorkerSettings",
]
__version__ = "0.1.0"
