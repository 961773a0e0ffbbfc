//! Limits on enrolling and removing devices.
//!
//! Registering is unauthenticated: anyone can add a pending device under any existing user. So
//! the number of pending devices of one user is capped, and new registrations from one source
//! address are rate limited. Revoking the last active device of a user would leave nobody able
//! to log in, approve a device or sign: it is refused unless forced. So is revoking a device
//! without which a policy's admin quorum (`admins`) or approval quorum (`approvals`) can no
//! longer be met: nobody could change that policy again, or approve that wallet's requests.
//!
//! Each check-then-act runs in the caller's transaction after [`lock_user`], which serialises
//! the transactions that touch one user's devices on SQLite and on PostgreSQL alike.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sqlx::AnyConnection;

use crate::db::{self, WriteTx};
use crate::error::{ApiError, ApiResult};

/// Refuses (unless `force`) to revoke `device_id` of `user_id` when a policy in force names it
/// in an admin or approval quorum that the remaining approvers cannot meet: a user label counts
/// as remaining while the user keeps another active device.
///
/// # Errors
/// 409 naming the wallet, the rule and how to go on; a database error, or a stored policy that
/// no longer parses.
pub async fn refuse_stranding_quorums(
    tx: &mut AnyConnection,
    user_id: &str,
    device_id: &str,
    force: bool,
) -> ApiResult<()> {
    if force {
        return Ok(());
    }
    let mentioning = db::policies::in_force_mentioning(&mut *tx, device_id).await?;
    if mentioning.is_empty() {
        return Ok(());
    }
    let user_left = db::devices::other_active_count(&mut *tx, user_id, device_id).await? > 0;
    for (wallet_id, text) in mentioning {
        let policy: tessera_api::Policy = serde_json::from_str(&text)
            .map_err(|e| ApiError::Internal(format!("stored policy of {wallet_id}: {e}")))?;
        for (field, rule) in [("admins", &policy.admins), ("approvals", &policy.approvals)] {
            let Some(rule) = rule else { continue };
            let parsed = crate::approval_rule::Rule::parse(rule)
                .map_err(|e| ApiError::Internal(format!("stored {field} of {wallet_id}: {e}")))?;
            let gone: std::collections::BTreeSet<String> = rule
                .approvers
                .iter()
                .filter(|(_, a)| match a {
                    tessera_api::requests::Approver::Device(d) => d.as_str() == device_id,
                    tessera_api::requests::Approver::User(u) => u.as_str() == user_id && !user_left,
                })
                .map(|(label, _)| label.clone())
                .collect();
            if gone.is_empty() {
                continue;
            }
            let left: std::collections::BTreeSet<String> = rule
                .approvers
                .keys()
                .filter(|l| !gone.contains(*l))
                .cloned()
                .collect();
            if parsed.standing(&left, &gone) != crate::approval_rule::Standing::Authorised {
                let what = if field == "admins" {
                    "change that policy again"
                } else {
                    "approve that wallet's requests"
                };
                return Err(ApiError::Conflict(format!(
                    "device {device_id} is {} in the {field} quorum {:?} of wallet {wallet_id}'s \
                     policy, which the others cannot meet without it: nobody could {what}. \
                     Change the policy first, or revoke it anyway with force \
                     (tessera device revoke {device_id} --force)",
                    gone.iter().cloned().collect::<Vec<_>>().join(", "),
                    rule.structure
                )));
            }
        }
    }
    Ok(())
}

/// Most devices of one user waiting for approval at once.
pub const MAX_PENDING_PER_USER: i64 = 16;
/// New registrations one source address may make at once (then [`REGISTRATIONS_PER_MINUTE`]).
pub const REGISTRATION_BURST: u32 = 100;
/// New registrations per minute from one source address, after the burst.
pub const REGISTRATIONS_PER_MINUTE: u32 = 10;

/// The per-address registration limiter.
pub struct RegistrationLimiter(DefaultKeyedRateLimiter<IpAddr>);

impl Default for RegistrationLimiter {
    fn default() -> Self {
        let per_minute = NonZeroU32::new(REGISTRATIONS_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(REGISTRATION_BURST).unwrap_or(NonZeroU32::MIN);
        RegistrationLimiter(RateLimiter::keyed(
            Quota::per_minute(per_minute).allow_burst(burst),
        ))
    }
}

impl RegistrationLimiter {
    /// One registration from `ip`.
    ///
    /// # Errors
    /// [`ApiError::TooManyRequests`].
    pub fn check(&self, ip: IpAddr) -> ApiResult<()> {
        self.0.check_key(&ip).map_err(|n| {
            let wait = n.wait_time_from(DefaultClock::default().now());
            ApiError::TooManyRequests {
                retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }

    /// Drops the state of addresses back to full capacity.
    pub fn forget_idle(&self) {
        self.0.retain_recent();
    }
}

/// Middleware on `POST /devices`: the per-address registration limit.
pub async fn limit_registrations(
    State(registrations): State<Arc<RegistrationLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    if let Err(e) = registrations.check(ip) {
        return e.into_response();
    }
    next.run(request).await
}

/// Takes the write lock on the user named `name` for the rest of `tx`, whether or not the user
/// exists yet: on PostgreSQL a transaction-scoped advisory lock on the name (a row lock would
/// take nothing while the user does not exist, and two first registrations would both create
/// it), then the row; on SQLite the database's write lock, already held. Call it first in the
/// transaction, before any read, so that SQLite waits for the lock instead of failing on a stale
/// snapshot.
///
/// # Errors
/// A database error.
pub async fn lock_user_by_name(tx: &mut WriteTx, name: &str) -> ApiResult<()> {
    Ok(db::devices::lock_user_by_name(tx, name).await?)
}

/// As [`lock_user_by_name`], by user id.
///
/// # Errors
/// A database error.
pub async fn lock_user(tx: &mut AnyConnection, user_id: &str) -> ApiResult<()> {
    Ok(db::devices::lock_user(tx, user_id).await?)
}

/// Refuses one more pending device when the user has [`MAX_PENDING_PER_USER`] already.
///
/// # Errors
/// [`ApiError::Conflict`] saying what to do; database errors.
pub async fn refuse_too_many_pending(tx: &mut AnyConnection, user_id: &str) -> ApiResult<()> {
    let pending = db::devices::pending_count(tx, user_id).await?;
    if pending >= MAX_PENDING_PER_USER {
        return Err(ApiError::Conflict(format!(
            "this user already has {pending} devices waiting for approval (at most \
             {MAX_PENDING_PER_USER}); an active device must approve or revoke some first"
        )));
    }
    Ok(())
}

/// The names of the user's devices that are not revoked (a new name must not look like them).
///
/// # Errors
/// A database error.
pub async fn live_device_names(tx: &mut AnyConnection, user_id: &str) -> ApiResult<Vec<String>> {
    Ok(db::devices::live_names(tx, user_id).await?)
}

/// Refuses to revoke `device_id` when it is the user's last active device, unless `force`.
///
/// # Errors
/// [`ApiError::Conflict`] explaining the lock-out and how to force it; database errors.
pub async fn refuse_revoking_last_active(
    tx: &mut AnyConnection,
    user_id: &str,
    device_id: &str,
    force: bool,
) -> ApiResult<()> {
    if force {
        return Ok(());
    }
    let others = db::devices::other_active_count(tx, user_id, device_id).await?;
    if others == 0 {
        return Err(ApiError::Conflict(format!(
            "device {device_id} is the last active device of this user: revoking it leaves no \
             device that can log in, approve new devices or sign, for good. Approve another \
             device first, or revoke it anyway with force (tessera device revoke {device_id} --force)"
        )));
    }
    Ok(())
}
