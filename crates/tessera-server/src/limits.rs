//! Rate limits (the `governor` crate, GCRA): per source address on every request, per device on
//! every authenticated request, and much stricter per source address on authentication failures
//! (after a short burst, one more failure per period: guessing is throttled to a crawl). A
//! limited request gets 429 with `Retry-After` (seconds).
//!
//! The counters live in this process: with several replicas each enforces its own share.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// Limits, as a sustained rate and a burst.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Requests per second from one source address.
    pub ip_per_second: u32,
    /// Burst from one source address.
    pub ip_burst: u32,
    /// Authenticated requests per second of one device.
    pub device_per_second: u32,
    /// Burst of one device.
    pub device_burst: u32,
    /// Authentication failures per minute from one source address, after the burst.
    pub auth_failures_per_minute: u32,
    /// Authentication failures allowed at once.
    pub auth_failure_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ip_per_second: 1000,
            ip_burst: 2000,
            device_per_second: 100,
            device_burst: 200,
            auth_failures_per_minute: 10,
            auth_failure_burst: 20,
        }
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

fn per_second(rate: u32, burst: u32) -> Quota {
    Quota::with_period(Duration::from_secs(1) / rate.max(1))
        .unwrap_or_else(|| Quota::per_second(nz(rate)))
        .allow_burst(nz(burst))
}

/// The limiters.
pub struct RateLimits {
    ip: DefaultKeyedRateLimiter<IpAddr>,
    device: DefaultKeyedRateLimiter<String>,
    auth_failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Source addresses in back-off after too many failures, until when.
    blocked: std::sync::Mutex<std::collections::HashMap<IpAddr, std::time::Instant>>,
}

impl RateLimits {
    /// Limiters for `limits`.
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        RateLimits {
            ip: RateLimiter::keyed(per_second(limits.ip_per_second, limits.ip_burst)),
            device: RateLimiter::keyed(per_second(limits.device_per_second, limits.device_burst)),
            auth_failures: RateLimiter::keyed(
                Quota::per_minute(nz(limits.auth_failures_per_minute))
                    .allow_burst(nz(limits.auth_failure_burst)),
            ),
            blocked: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn retry_after(wait: Duration) -> ApiError {
        ApiError::TooManyRequests {
            retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        }
    }

    /// One authenticated request of `device`.
    ///
    /// # Errors
    /// [`ApiError::TooManyRequests`].
    pub fn check_device(&self, device: &str) -> Result<(), ApiError> {
        self.device.check_key(&device.to_string()).map_err(|n| {
            crate::observe::rate_limited("device");
            Self::retry_after(n.wait_time_from(DefaultClock::default().now()))
        })
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        if let Ok(mut blocked) = self.blocked.lock()
            && let Some(until) = blocked.get(&ip).copied()
        {
            let now = std::time::Instant::now();
            if until > now {
                crate::observe::rate_limited("auth_failures");
                return Err(Self::retry_after(until - now));
            }
            blocked.remove(&ip);
        }
        self.ip.check_key(&ip).map_err(|n| {
            crate::observe::rate_limited("address");
            Self::retry_after(n.wait_time_from(DefaultClock::default().now()))
        })
    }

    fn auth_failed(&self, ip: IpAddr) {
        if let Err(n) = self.auth_failures.check_key(&ip) {
            let wait = n.wait_time_from(DefaultClock::default().now());
            if let Ok(mut blocked) = self.blocked.lock() {
                blocked.insert(ip, std::time::Instant::now() + wait);
            }
        }
    }

    /// Drops the state of keys that are back to full capacity (call now and then).
    pub fn forget_idle(&self) {
        self.ip.retain_recent();
        self.device.retain_recent();
        self.auth_failures.retain_recent();
        if let Ok(mut blocked) = self.blocked.lock() {
            let now = std::time::Instant::now();
            blocked.retain(|_, until| *until > now);
        }
    }
}

/// Middleware: the per-address limit, and the back-off after authentication failures.
pub async fn per_address(
    State(limits): State<Arc<RateLimits>>,
    request: Request,
    next: Next,
) -> Response {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    if let Err(e) = limits.check_ip(ip) {
        return e.into_response();
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        limits.auth_failed(ip);
    }
    response
}
