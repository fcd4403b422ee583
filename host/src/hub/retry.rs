//! Retries with exponential backoff, honouring `Retry-After`: the one
//! policy every download loop ([`super::download`]) follows.
//!
//! A [`Retry`] counts the failed attempts of one request (a chunk, a whole
//! file stream), over both kinds of failure: an answer that says "later"
//! (429, 5xx) and a stream that broke part way. It only computes the wait;
//! the caller reports it and sleeps, so the policy is tested without time
//! passing.

use std::time::Duration;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included, before giving up.
    pub max_attempts: u32,
    /// The wait after the first failure, doubled after each further one.
    pub backoff: Duration,
    /// The longest wait, `Retry-After` included.
    pub max_backoff: Duration,
}

/// The failed attempts of one request so far.
#[derive(Debug, Clone)]
pub struct Retry {
    policy: RetryPolicy,
    failures: u32,
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait this long, then make attempt `attempt` (counting from 1).
    Wait { delay: Duration, attempt: u32 },
    /// All [`RetryPolicy::max_attempts`] were used.
    GiveUp,
}

impl Retry {
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            failures: 0,
        }
    }

    /// The policy this retry follows.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Counts a failed attempt and says what comes next: the backoff
    /// (`backoff * 2^(failures - 1)`), or the server's `retry_after` when it
    /// sent one, either capped at `max_backoff`; or giving up once
    /// `max_attempts` attempts have failed.
    pub fn failed(&mut self, retry_after: Option<Duration>) -> Next {
        self.failures += 1;
        if self.failures >= self.policy.max_attempts {
            return Next::GiveUp;
        }
        let exp = self
            .policy
            .backoff
            .saturating_mul(2u32.saturating_pow(self.failures - 1));
        Next::Wait {
            delay: retry_after.unwrap_or(exp).min(self.policy.max_backoff),
            attempt: self.failures + 1,
        }
    }
}

/// Whether an HTTP status asks to try again later: 429 and 5xx.
pub fn is_retryable(status: reqwest::StatusCode) -> bool {
    status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// A `Retry-After` header given in seconds. (The HTTP-date form is not
/// read: the backoff applies instead.)
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            backoff: 10 * MS,
            max_backoff: 50 * MS,
        }
    }

    fn wait(delay: Duration, attempt: u32) -> Next {
        Next::Wait { delay, attempt }
    }

    #[test]
    fn the_backoff_doubles_up_to_the_cap_then_gives_up() {
        let mut r = Retry::new(policy(6));
        assert_eq!(r.failed(None), wait(10 * MS, 2));
        assert_eq!(r.failed(None), wait(20 * MS, 3));
        assert_eq!(r.failed(None), wait(40 * MS, 4));
        assert_eq!(r.failed(None), wait(50 * MS, 5));
        assert_eq!(r.failed(None), wait(50 * MS, 6));
        assert_eq!(r.failed(None), Next::GiveUp);
        assert_eq!(r.failed(None), Next::GiveUp);
    }

    #[test]
    fn retry_after_replaces_the_backoff_and_is_capped() {
        let mut r = Retry::new(policy(8));
        assert_eq!(r.failed(Some(3 * MS)), wait(3 * MS, 2));
        // The doubling counts every failure, Retry-After ones included.
        assert_eq!(r.failed(None), wait(20 * MS, 3));
        assert_eq!(r.failed(Some(Duration::from_secs(120))), wait(50 * MS, 4));
        assert_eq!(r.failed(Some(Duration::ZERO)), wait(Duration::ZERO, 5));
    }

    #[test]
    fn one_attempt_or_none_means_no_retry() {
        assert_eq!(Retry::new(policy(1)).failed(None), Next::GiveUp);
        assert_eq!(Retry::new(policy(0)).failed(Some(MS)), Next::GiveUp);
    }

    #[test]
    fn a_huge_attempt_count_does_not_overflow() {
        let mut r = Retry::new(RetryPolicy {
            max_attempts: u32::MAX,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        });
        for _ in 0..100 {
            assert!(matches!(r.failed(None), Next::Wait { delay, .. } if delay <= 60 * 1000 * MS));
        }
    }

    #[test]
    fn retryable_statuses_and_retry_after_headers() {
        use reqwest::StatusCode;
        use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
        for s in [429, 500, 502, 503, 504, 599] {
            assert!(is_retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200, 206, 301, 400, 403, 404, 416] {
            assert!(!is_retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static(" 7 "));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
