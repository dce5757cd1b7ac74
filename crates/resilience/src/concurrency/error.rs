//! The concurrency limit's own rejections.

use std::{fmt, sync::Arc, time::Duration};

/// The wait queue was full: the call was rejected at once, without waiting.
#[derive(Clone, Debug)]
pub struct QueueFull {
    pub(crate) name: Arc<str>,
    pub(crate) max_queue: usize,
    pub(crate) retry_after: Duration,
}

impl QueueFull {
    /// The rejection a limit named `name`, with a queue of `max_queue`, gives;
    /// public so the layers above (and their tests) can make one.
    pub fn new(name: impl Into<Arc<str>>, max_queue: usize, retry_after: Duration) -> Self {
        Self {
            name: name.into(),
            max_queue,
            retry_after,
        }
    }

    /// How long a caller should wait before trying again.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The name of the concurrency limit that rejected the call.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for QueueFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "concurrency limit '{}': wait queue is full ({} waiting)",
            self.name, self.max_queue
        )
    }
}

impl std::error::Error for QueueFull {}

/// The call waited `queue_timeout` for a permit without getting one.
#[derive(Clone, Debug)]
pub struct QueueTimeout {
    pub(crate) name: Arc<str>,
    pub(crate) waited: Duration,
    pub(crate) retry_after: Duration,
}

impl QueueTimeout {
    /// The rejection a limit named `name` gives after `waited` in its queue;
    /// public so the layers above (and their tests) can make one.
    pub fn new(name: impl Into<Arc<str>>, waited: Duration, retry_after: Duration) -> Self {
        Self {
            name: name.into(),
            waited,
            retry_after,
        }
    }

    /// How long a caller should wait before trying again.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The name of the concurrency limit that rejected the call.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long the call waited in the queue.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl fmt::Display for QueueTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "concurrency limit '{}': no permit within {:?} in the wait queue",
            self.name, self.waited
        )
    }
}

impl std::error::Error for QueueTimeout {}

impl crate::retry::RetryAfterHint for QueueFull {
    fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl crate::retry::RetryAfterHint for QueueTimeout {
    fn retry_after(&self) -> Duration {
        self.retry_after
    }
}
