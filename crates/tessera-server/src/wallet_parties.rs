//! The parties of a structure wallet: from a user and a structure text, which party is the
//! server and which is which device ([`resolve`]), a user's default structure
//! ([`default_structure`]), and storing the wallet with its parties ([`store`]).
//!
//! Resolution rules (issue 15, docs/quorum-wallets.md):
//!
//! - The text is a wallet structure (`tessera_core::structure::WalletStructure`: `and`, `or`,
//!   `threshold` over labels); its grammar errors are shown as the parser words them. Party `i`
//!   is the `i`-th label in written order.
//! - `server` is the server. It must appear (once: the grammar refuses a label twice), since the
//!   server is a party of every wallet it stores.
//! - Any other plain label is a device of the requesting user, by the device's *party label*
//!   (`crate::names::party_label`: "Alice's laptop" is `alices-laptop`). Only an active device
//!   can be a party: a pending or revoked one is refused, saying so. A label that fits two live
//!   devices of the user is ambiguous and refused, naming both.
//! - `user:device` is a device of another user, by that user's exact name (which must itself be
//!   a valid label: lowercase `[a-z0-9._-]`) and the device's party label. Its party label in the
//!   stored structure is `user.device` (the `:` becomes `.`, so columns in error messages stay
//!   those of the text as written, and the stored text parses as a plain structure). Such a
//!   device takes part only once it accepted (`wallet_parties.acceptance`); only another user's
//!   active devices are found, and nothing else is said about them.
//! - At least one party is a device of the requesting user (a wallet its owner holds no share
//!   of could never be signed, refreshed or reshared by its owner).
//!
//! A user's default structure is `and(server, or(<each active device>))`, or
//! `and(server, <device>)` with one active device (the grammar wants two children for `or`).
//!
//! Invitations ([`accept`]): another user's device learns of the wallet when a session of it
//! waits for the device (`GET /sessions/joinable` says who invites it,
//! `api::Invitation`). It accepts by signing `api::acceptance_message` (the wallet's id and name, its
//! structure as stored, its party's index and label, the owner's name) with its identity key;
//! the server verifies the signature against the registry, records it
//! (`wallet_parties.acceptance`) and audits it (`wallet.accepted`). Until then the device
//! cannot open any session of the wallet (`ws::party_of`); afterwards the wallet is in its
//! user's `GET /wallets`, and its user's devices that are parties may read and sign with it
//! (`db::wallets::shared`); policies, resharing and backups stay its owner's.
//! A resharing keeps the acceptance of another user's device that stays a party; adding one
//! that is not yet a party is refused (it is invited at key generation). A device that declines
//! ([`decline`]) cannot open the session to say so: the server tells the session's other
//! parties in its name, at once, and audits it (`wallet.declined`).

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::AnyConnection;
use tessera_core::PartyIndex;
use tessera_core::structure::WalletStructure;

use axum::Json;
use axum::extract::State;
use serde_json::json;
use tessera_api as api;

use crate::audit::{self, Subject};
use crate::auth::AuthDevice;
use crate::db::devices::DeviceRow;
use crate::db::{self, DeviceStatus, PartyKind, WriteTx};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::names::{SERVER_LABEL, party_label};
use crate::state::{AppState, now};

/// What a party is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    /// The server.
    Server,
    /// A device.
    Device {
        /// Its id.
        device_id: String,
        /// Its user.
        user_id: String,
        /// Its name (as registered).
        name: String,
        /// Another user's device, invited: it must accept before it takes part.
        invited: bool,
    },
}

/// A party of a resolved structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// Its index (its label's position in the structure).
    pub index: PartyIndex,
    /// Its label in the stored structure.
    pub label: String,
    /// What it is.
    pub member: Member,
}

/// A structure whose every label is the server or a device (made only by [`resolve`]).
#[derive(Debug, Clone)]
pub struct ResolvedStructure {
    structure: WalletStructure,
    parties: Vec<Party>,
}

impl ResolvedStructure {
    /// The structure.
    #[must_use]
    pub fn structure(&self) -> &WalletStructure {
        &self.structure
    }

    /// Its canonical text, as stored (another user's device as `user.device`).
    #[must_use]
    pub fn text(&self) -> String {
        self.structure.tree().to_string()
    }

    /// The parties, party `i` at index `i`.
    #[must_use]
    pub fn parties(&self) -> &[Party] {
        &self.parties
    }

    /// The parties that must accept before the wallet's keygen (other users' devices).
    pub fn needs_acceptance(&self) -> impl Iterator<Item = &Party> {
        self.parties
            .iter()
            .filter(|p| matches!(p.member, Member::Device { invited: true, .. }))
    }

    /// The size of the smallest authorised quorum.
    #[must_use]
    pub fn smallest_quorum(&self) -> usize {
        self.structure
            .minimal_quorums()
            .iter()
            .map(std::collections::BTreeSet::len)
            .min()
            .unwrap_or(0)
    }
}

/// Why a structure's labels do not resolve to parties. Every variant but
/// [`ResolveError::Database`] and [`ResolveError::StoredParty`] is the request's fault (400,
/// with this message).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The text is not a wallet structure (the parser's message, labels as written).
    #[error("{0}")]
    Grammar(String),
    /// `server` is not a party.
    #[error(
        "the structure does not name \"server\": the server is a party of every wallet it \
         stores, e.g. and(server, or(phone, laptop))"
    )]
    NoServer,
    /// No device of the requesting user is a party.
    #[error(
        "the structure names none of your devices: a wallet needs at least one of them \
         (its owner could never sign, refresh or reshare it otherwise)"
    )]
    NoOwnDevice,
    /// No device of the user has this label.
    #[error("you have no device labelled {label:?}; {}", known_labels(.known, .unlabelled))]
    UnknownDevice {
        /// The label.
        label: String,
        /// The labels of the user's active devices.
        known: Vec<String>,
        /// The names of active devices that give no label.
        unlabelled: Vec<String>,
    },
    /// The device of this label is pending or revoked.
    #[error(
        "your device {name:?} (label {label:?}) is {}; only active devices can be parties",
        status_words(*.status)
    )]
    DeviceNotActive {
        /// The label.
        label: String,
        /// The device's name.
        name: String,
        /// Its status.
        status: DeviceStatus,
    },
    /// Several live devices of the user have this label.
    #[error(
        "the label {label:?} fits several of your devices ({}); revoke all but one of them, \
         or register one again under a name that gives another label",
        quoted(.names)
    )]
    AmbiguousLabel {
        /// The label.
        label: String,
        /// Their names.
        names: Vec<String>,
    },
    /// A plain label that is also another user's device as written (`bob.phone` and
    /// `bob:phone`).
    #[error(
        "{label:?} and {invited:?} would be the same party label {label:?}; a structure names \
         another user's device as user:device and the party stored is user.device, so it \
         cannot also hold a device of yours labelled {label:?}"
    )]
    LabelClash {
        /// The plain label.
        label: String,
        /// The other user's device as written.
        invited: String,
    },
    /// A word with `:` that is not `user:device`.
    #[error(
        "{written:?} is not user:device (another user's device is written as that user's \
         name, one ':', and the device's label, e.g. bob:phone)"
    )]
    BadInvite {
        /// The word as written.
        written: String,
    },
    /// `user:device` naming the requesting user.
    #[error("{written:?} names your own device; write it as {label:?}")]
    OwnDeviceAsInvited {
        /// As written.
        written: String,
        /// The device's label.
        label: String,
    },
    /// `user:device` naming no user.
    #[error("{written:?}: there is no user named {user:?}")]
    UnknownUser {
        /// As written.
        written: String,
        /// The user name.
        user: String,
    },
    /// `user:device` naming no active device of that user (nothing else is told about another
    /// user's devices).
    #[error("{written:?}: user {user:?} has no active device labelled {label:?}")]
    UnknownUserDevice {
        /// As written.
        written: String,
        /// The user name.
        user: String,
        /// The device label.
        label: String,
    },
    /// `user:device` whose label fits several active devices of that user.
    #[error(
        "{written:?}: the label {label:?} fits several devices of user {user:?}; they must \
         register one of them again under another name"
    )]
    AmbiguousUserDevice {
        /// As written.
        written: String,
        /// The user name.
        user: String,
        /// The device label.
        label: String,
    },
    /// One device under two labels.
    #[error("the device {name:?} is named twice ({}); each party appears once", quoted(.labels))]
    DeviceTwice {
        /// Its name.
        name: String,
        /// The labels it is named by.
        labels: Vec<String>,
    },
    /// The default structure needs an active device.
    #[error("you have no active device to hold a share of a new wallet")]
    NoActiveDevice,
    /// The default structure cannot name this active device.
    #[error(
        "your device {name:?} has a name that gives no structure label (labels are a-z, 0-9, \
         '.', '_', '-', at most 32 characters, not \"server\" or a keyword); write the \
         structure without it, or register it again under another name"
    )]
    UnlabelledDevice {
        /// Its name.
        name: String,
    },
    /// Another user's device kept from the wallet being reshared is no longer active.
    #[error(
        "{label:?} is another user's device that is no longer active (revoked); give the new \
         structure without it"
    )]
    InvitedDeviceGone {
        /// Its party label (`user.device`).
        label: String,
    },
    /// A stored party of the wallet is not what its kind says (a server error, not the
    /// request's).
    #[error("stored wallet party {0:?} has no device or no user")]
    StoredParty(String),
    /// Reading the devices failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<ResolveError> for ApiError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::Database(e) => e.into(),
            e @ ResolveError::StoredParty(_) => ApiError::Internal(e.to_string()),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn known_labels(known: &[String], unlabelled: &[String]) -> String {
    let mut out = if known.is_empty() {
        "you have no active device with a label".to_string()
    } else {
        format!("your active devices are labelled {}", quoted(known))
    };
    if !unlabelled.is_empty() {
        out.push_str(&format!(
            " ({} cannot be named: no label)",
            quoted(unlabelled)
        ));
    }
    out
}

fn status_words(status: DeviceStatus) -> &'static str {
    match status {
        DeviceStatus::Active => "active",
        DeviceStatus::Pending => "pending approval (approve it from an active device first)",
        DeviceStatus::Revoked => "revoked",
    }
}

/// Whether a character ends a word of structure text (as the parser splits it).
fn delimiter(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | ',')
}

/// Another user's device as written.
struct Invite {
    written: String,
    user: String,
    device: String,
}

/// Resolves `text` for the user `owner_id`: each label to the server or a device (rules in
/// the [module documentation](self)). `existing` are the parties of the wallet being reshared
/// (none for a new wallet): another user's device among them keeps its stored label
/// (`user.device`), which resolves to it while it is active. Run it in the transaction that stores the wallet, so that
/// no device changes in between.
///
/// # Errors
/// A [`ResolveError`] saying what is wrong with the text; a database error.
pub async fn resolve(
    conn: &mut AnyConnection,
    owner_id: &str,
    text: &str,
    existing: &[db::wallet_parties::StoredParty],
) -> Result<ResolvedStructure, ResolveError> {
    // `user:device` words become `user.device` (same length: columns stay right).
    let mut invites: BTreeMap<String, Invite> = BTreeMap::new();
    let mut plain = HashSet::new();
    for word in text.split(delimiter).filter(|w| !w.is_empty()) {
        if !word.contains(':') {
            plain.insert(word);
            continue;
        }
        let Some((user, device)) = word.split_once(':') else {
            continue;
        };
        if user.is_empty() || device.is_empty() || device.contains(':') {
            return Err(ResolveError::BadInvite {
                written: word.to_owned(),
            });
        }
        invites.insert(
            word.replace(':', "."),
            Invite {
                written: word.to_owned(),
                user: user.to_owned(),
                device: device.to_owned(),
            },
        );
    }
    if let Some((label, invite)) = invites.iter().find(|(l, _)| plain.contains(l.as_str())) {
        return Err(ResolveError::LabelClash {
            label: label.clone(),
            invited: invite.written.clone(),
        });
    }
    let structure = WalletStructure::parse(&text.replace(':', ".")).map_err(|e| {
        let mut message = e.to_string();
        for (label, invite) in &invites {
            message = message.replace(&format!("\"{label}\""), &format!("\"{}\"", invite.written));
        }
        ResolveError::Grammar(message)
    })?;
    if structure.party(SERVER_LABEL).is_none() {
        return Err(ResolveError::NoServer);
    }

    let own = db::devices::list(&mut *conn, owner_id).await?;
    let mut others: HashMap<String, (String, Vec<DeviceRow>)> = HashMap::new();
    let mut parties = Vec::with_capacity(structure.party_count());
    for (i, label) in structure.labels().iter().enumerate() {
        let member = if label == SERVER_LABEL {
            Member::Server
        } else if let Some(invite) = invites.get(label) {
            if !others.contains_key(&invite.user) {
                let Some(user_id) = db::devices::user_named(&mut *conn, &invite.user).await? else {
                    return Err(ResolveError::UnknownUser {
                        written: invite.written.clone(),
                        user: invite.user.clone(),
                    });
                };
                let devices = db::devices::list(&mut *conn, &user_id).await?;
                others.insert(invite.user.clone(), (user_id, devices));
            }
            let (user_id, devices) = &others[&invite.user];
            if user_id == owner_id {
                return Err(ResolveError::OwnDeviceAsInvited {
                    written: invite.written.clone(),
                    label: invite.device.clone(),
                });
            }
            invited_device(invite, user_id, devices)?
        } else if let Some(kept) = existing.iter().find(|p| {
            p.label == *label
                && p.kind == PartyKind::Device
                && p.user_id.as_deref().is_some_and(|u| u != owner_id)
        }) {
            kept_invited(&mut *conn, label, kept).await?
        } else {
            own_device(label, owner_id, &own)?
        };
        parties.push(Party {
            index: PartyIndex::new(i as u8),
            label: label.clone(),
            member,
        });
    }

    let mut labels_of: BTreeMap<&str, (&str, Vec<String>)> = BTreeMap::new();
    for p in &parties {
        if let Member::Device {
            device_id, name, ..
        } = &p.member
        {
            labels_of
                .entry(device_id)
                .or_insert((name, Vec::new()))
                .1
                .push(p.label.clone());
        }
    }
    if let Some((name, labels)) = labels_of.values().find(|(_, l)| l.len() > 1) {
        return Err(ResolveError::DeviceTwice {
            name: (*name).to_owned(),
            labels: labels.clone(),
        });
    }
    if !parties
        .iter()
        .any(|p| matches!(&p.member, Member::Device { user_id, .. } if user_id == owner_id))
    {
        return Err(ResolveError::NoOwnDevice);
    }
    Ok(ResolvedStructure { structure, parties })
}

fn own_device(label: &str, owner_id: &str, devices: &[DeviceRow]) -> Result<Member, ResolveError> {
    let fits: Vec<&DeviceRow> = devices
        .iter()
        .filter(|d| party_label(&d.2).as_deref() == Some(label))
        .collect();
    let live: Vec<&DeviceRow> = fits
        .iter()
        .copied()
        .filter(|d| d.4 != DeviceStatus::Revoked)
        .collect();
    match (live.as_slice(), fits.first()) {
        ([device], _) if device.4 == DeviceStatus::Active => Ok(Member::Device {
            device_id: device.0.clone(),
            user_id: owner_id.to_owned(),
            name: device.2.clone(),
            invited: false,
        }),
        ([device], _) => Err(ResolveError::DeviceNotActive {
            label: label.to_owned(),
            name: device.2.clone(),
            status: device.4,
        }),
        ([], Some(revoked)) => Err(ResolveError::DeviceNotActive {
            label: label.to_owned(),
            name: revoked.2.clone(),
            status: DeviceStatus::Revoked,
        }),
        ([], None) => {
            let active = devices.iter().filter(|d| d.4 == DeviceStatus::Active);
            let mut known: Vec<String> = Vec::new();
            for l in active.clone().filter_map(|d| party_label(&d.2)) {
                if !known.contains(&l) {
                    known.push(l);
                }
            }
            Err(ResolveError::UnknownDevice {
                label: label.to_owned(),
                known,
                unlabelled: active
                    .filter(|d| party_label(&d.2).is_none())
                    .map(|d| d.2.clone())
                    .collect(),
            })
        }
        (several, _) => Err(ResolveError::AmbiguousLabel {
            label: label.to_owned(),
            names: several.iter().map(|d| d.2.clone()).collect(),
        }),
    }
}

/// Another user's device that is a party of the wallet being reshared, under its stored label:
/// itself while it is active.
async fn kept_invited(
    conn: &mut AnyConnection,
    label: &str,
    kept: &db::wallet_parties::StoredParty,
) -> Result<Member, ResolveError> {
    let (Some(device_id), Some(user_id)) = (&kept.device_id, &kept.user_id) else {
        return Err(ResolveError::StoredParty(label.to_owned()));
    };
    match db::devices::standing(&mut *conn, device_id).await? {
        Some((DeviceStatus::Active, _)) => Ok(Member::Device {
            device_id: device_id.clone(),
            user_id: user_id.clone(),
            name: label.to_owned(),
            invited: true,
        }),
        _ => Err(ResolveError::InvitedDeviceGone {
            label: label.to_owned(),
        }),
    }
}

fn invited_device(
    invite: &Invite,
    user_id: &str,
    devices: &[DeviceRow],
) -> Result<Member, ResolveError> {
    let active: Vec<&DeviceRow> = devices
        .iter()
        .filter(|d| {
            d.4 == DeviceStatus::Active && party_label(&d.2).as_deref() == Some(&invite.device)
        })
        .collect();
    match active.as_slice() {
        [device] => Ok(Member::Device {
            device_id: device.0.clone(),
            user_id: user_id.to_owned(),
            name: device.2.clone(),
            invited: true,
        }),
        [] => Err(ResolveError::UnknownUserDevice {
            written: invite.written.clone(),
            user: invite.user.clone(),
            label: invite.device.clone(),
        }),
        _ => Err(ResolveError::AmbiguousUserDevice {
            written: invite.written.clone(),
            user: invite.user.clone(),
            label: invite.device.clone(),
        }),
    }
}

/// The default structure text over `devices` (a user's, as [`db::devices::list`] gives them):
/// `and(server, or(<each active device, by label>))`, or `and(server, <device>)` with one.
///
/// # Errors
/// No active device; an active device whose name gives no label; two that give the same one.
pub fn default_text(devices: &[DeviceRow]) -> Result<String, ResolveError> {
    let mut labels: Vec<String> = Vec::new();
    let mut names_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for device in devices.iter().filter(|d| d.4 == DeviceStatus::Active) {
        let label = party_label(&device.2).ok_or_else(|| ResolveError::UnlabelledDevice {
            name: device.2.clone(),
        })?;
        let names = names_of.entry(label.clone()).or_default();
        names.push(device.2.clone());
        if names.len() == 1 {
            labels.push(label);
        }
    }
    if let Some((label, names)) = names_of.into_iter().find(|(_, n)| n.len() > 1) {
        return Err(ResolveError::AmbiguousLabel { label, names });
    }
    // By label, so that the same devices always give the same text (the registry's order
    // depends on when each registered).
    labels.sort();
    match labels.as_slice() {
        [] => Err(ResolveError::NoActiveDevice),
        [one] => Ok(format!("and({SERVER_LABEL}, {one})")),
        several => Ok(format!("and({SERVER_LABEL}, or({}))", several.join(", "))),
    }
}

/// The default structure of the user `owner_id` for a new wallet asked for by its device
/// `requester` at `at`: [`default_text`] over the requester and the user's other active
/// devices that are online (their agent listening, `db::wallet_changes::is_online`), resolved;
/// and the active devices left out (offline), by id and label, each to join the wallet by
/// resharing once it has its key (`db::wallet_changes::add`), so that the wallet ends with
/// every active device of the user without a key generation waiting for devices that are not
/// there.
///
/// # Errors
/// As [`default_text`] (over every active device, online or not) and [`resolve`].
pub async fn default_structure(
    conn: &mut AnyConnection,
    owner_id: &str,
    requester: &str,
    at: i64,
) -> Result<(ResolvedStructure, Vec<(String, String)>), ResolveError> {
    let devices = db::devices::list(&mut *conn, owner_id).await?;
    // Every active device must give a label (one of them could not join otherwise).
    default_text(&devices)?;
    let mut now_in = Vec::new();
    let mut later = Vec::new();
    for device in devices {
        if device.4 != DeviceStatus::Active {
            continue;
        }
        if device.0 == requester || db::wallet_changes::is_online(&mut *conn, &device.0, at).await?
        {
            now_in.push(device);
        } else if let Some(label) = party_label(&device.2) {
            later.push((device.0.clone(), label));
        }
    }
    let text = default_text(&now_in)?;
    Ok((resolve(conn, owner_id, &text, &[]).await?, later))
}

/// Gives back the name `name` of `me`'s user when it belongs to a structure wallet whose key
/// generation never completed (a party declined or never came) and is over: that wallet has no
/// key, share, policy or backup, and is deleted with its parties, in `tx`, audited as
/// `wallet.discarded`. A key generation still live (or heard of within twice the session idle
/// timeout) keeps its name.
///
/// # Errors
/// A database error.
pub async fn discard_unmade(
    state: &AppState,
    tx: &mut WriteTx,
    me: &AuthDevice,
    name: &str,
) -> ApiResult<()> {
    let idle = state.config().session_idle_timeout.as_secs() as i64;
    let live_since = now() - 2 * idle;
    if let Some(unmade) =
        db::wallet_parties::forget_unmade(tx, &me.user_id, name, live_since).await?
    {
        audit::append_in(
            tx,
            "wallet.discarded",
            Subject::device(me).wallet(&unmade),
            json!({
                "name": name,
                "reason": "its key generation never completed; the name is used again",
            }),
        )
        .await?;
    }
    Ok(())
}

/// A structure wallet to store ([`store`]).
pub struct NewWallet<'a> {
    /// Hex id.
    pub id: &'a str,
    /// The owner (the user the structure was resolved for).
    pub owner_id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its compressed public key, if its keygen completed.
    pub public_key: Option<&'a [u8]>,
    /// Its epoch.
    pub epoch: u64,
    /// Now.
    pub at: i64,
}

/// Stores a wallet and its resolved parties in `tx` (the caller commits; dropping `tx` stores
/// nothing).
///
/// # Errors
/// [`ApiError::Conflict`] when the owner has a wallet of that name; a database error.
pub async fn store(
    tx: &mut WriteTx,
    wallet: &NewWallet<'_>,
    resolved: &ResolvedStructure,
) -> ApiResult<()> {
    let text = resolved.text();
    let parties: Vec<db::wallet_parties::NewParty<'_>> = resolved
        .parties
        .iter()
        .map(|p| db::wallet_parties::NewParty {
            party: i64::from(p.index.get()),
            label: &p.label,
            kind: match p.member {
                Member::Server => PartyKind::Server,
                Member::Device { .. } => PartyKind::Device,
            },
            device: match &p.member {
                Member::Server => None,
                Member::Device {
                    device_id, user_id, ..
                } => Some((device_id.as_str(), user_id.as_str())),
            },
        })
        .collect();
    db::wallet_parties::insert(
        tx,
        &db::wallet_parties::NewStructureWallet {
            id: wallet.id,
            user_id: wallet.owner_id,
            name: wallet.name,
            structure: &text,
            smallest_quorum: resolved.smallest_quorum() as i64,
            public_key: wallet.public_key,
            epoch: wallet.epoch as i64,
            created_at: wallet.at,
        },
        &parties,
    )
    .await
}

/// `POST /wallet/accept`: the calling device accepts its party in another user's wallet (see
/// the [module documentation](self)). Accepting twice is not an error (the first acceptance
/// stays).
///
/// # Errors
/// 404 when the device is not an invited party of the wallet (nothing else is said about the
/// wallet); 400 for a malformed signature; 401 when it does not verify; database errors.
#[utoipa::path(post, path = "/wallet/accept", tag = "wallets", security(("bearer" = [])), request_body = api::AcceptWallet, responses((status = 200, description = "Accepted: `{\"accepted\": true, \"party\": N}`", body = Object), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Gone, crate::openapi::Errors))]
pub async fn accept(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiJson(req): ApiJson<api::AcceptWallet>,
) -> ApiResult<Json<serde_json::Value>> {
    let not_invited = || {
        ApiError::NotFound(format!(
            "this device is not invited into a wallet {}",
            req.wallet_id
        ))
    };
    let wallet = db::wallet_parties::wallet(state.db(), &req.wallet_id)
        .await?
        .ok_or_else(not_invited)?;
    let structure = wallet.structure.as_deref().ok_or_else(not_invited)?;
    let parties = db::wallet_parties::of_wallet(state.db(), &wallet.id).await?;
    let mine = parties
        .iter()
        .find(|p| {
            p.device_id.as_deref() == Some(me.device_id.as_str())
                && p.user_id.as_deref() != Some(wallet.user_id.as_str())
        })
        .ok_or_else(not_invited)?;
    let party = u8::try_from(mine.party)
        .map_err(|_| ApiError::Internal(format!("stored party {}", mine.party)))?;
    let owner = db::devices::user_name(state.db(), &wallet.user_id)
        .await?
        .ok_or_else(|| ApiError::Internal("a wallet without its owner".into()))?;
    let message = api::acceptance_message(&api::Acceptance {
        wallet_id: &wallet.id,
        wallet_name: &wallet.name,
        structure,
        party,
        label: &mine.label,
        owner: &owner,
    });
    crate::registry::verify_device_signature(&state, &me.device_id, &message, &req.signature)
        .await?;
    if mine.accepted.is_some() {
        return Ok(Json(json!({ "accepted": true, "party": party })));
    }
    let mut tx = state.begin_write().await?;
    if db::wallet_parties::record_acceptance(
        &mut *tx,
        &wallet.id,
        &me.device_id,
        &req.signature,
        now(),
    )
    .await?
    {
        audit::append_in(
            &mut tx,
            "wallet.accepted",
            Subject::device(&me).wallet(&wallet.id),
            json!({ "party": party, "label": mine.label, "owner": owner, "structure": structure }),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Json(json!({ "accepted": true, "party": party })))
}

/// `POST /wallet/decline`: the calling device, invited into another user's wallet and not
/// having accepted, declines the key generation `session_id`: every other party whose mailbox
/// is open gets the device's end (left: declined), so that the run fails at once naming it,
/// instead of waiting for it until the join window ends.
///
/// # Errors
/// 404 when the session is not a live key generation this device is invited into and has not
/// accepted; database or mailbox errors.
#[utoipa::path(post, path = "/wallet/decline", tag = "wallets", security(("bearer" = [])), request_body = api::DeclineInvitation, responses((status = 200, description = "Declined: `{\"declined\": true, \"told\": …}`", body = Object), crate::openapi::AuthErrors, crate::openapi::NotFound, crate::openapi::Conflict, crate::openapi::Gone, crate::openapi::Errors))]
pub async fn decline(
    State(state): State<AppState>,
    me: AuthDevice,
    ApiJson(req): ApiJson<api::DeclineInvitation>,
) -> ApiResult<Json<serde_json::Value>> {
    use tessera_api::session_frame::{End, EndReason, end_frame};
    let sid = req.session_id.as_str();
    let not_invited =
        || ApiError::NotFound(format!("this device is not invited into a session {sid}"));
    let session = {
        let mut conn = state.db().acquire().await?;
        db::sessions::open_context(&mut conn, sid, &me.device_id)
            .await?
            .map_err(|_| not_invited())?
    };
    if session.protocol != db::Protocol::Keygen
        || !matches!(
            session.status,
            db::SessionStatus::Created | db::SessionStatus::Running
        )
    {
        return Err(not_invited());
    }
    let parties = db::wallet_parties::of_wallet(state.db(), &session.wallet_id).await?;
    let mine = parties
        .iter()
        .find(|p| p.device_id.as_deref() == Some(me.device_id.as_str()))
        .filter(|p| me.user_id != session.owner_id && p.accepted.is_none())
        .ok_or_else(not_invited)?;
    let index = |party: i64| {
        u8::try_from(party)
            .map(PartyIndex::new)
            .map_err(|_| ApiError::Internal(format!("stored party {party}")))
    };
    let frame = end_frame(
        index(mine.party)?,
        &End::new(
            EndReason::Left,
            "the person at this device declined the invitation",
        ),
    );
    // The end is recorded first, then the parties whose mailbox is open are told: a party
    // whose mailbox opens after the telling finds the session ended (a party looking for its
    // peers reads the session's row, `session_link`; a device's socket is refused with the
    // recorded reason, `ws`), so that nobody waits for this device.
    let detail = format!(
        "party {} ({:?}) left: the person at this device declined the invitation",
        mine.party, mine.label
    );
    let mut tx = state.begin_write().await?;
    // Ended meanwhile (another decline of the same session, its run's end): nothing to tell.
    if !db::sessions::end_if_live(&mut *tx, sid, db::SessionStatus::Failed, &detail, now()).await? {
        return Err(not_invited());
    }
    audit::append_in(
        &mut tx,
        "wallet.declined",
        Subject::device(&me).wallet(&session.wallet_id),
        json!({ "session_id": sid, "party": mine.party, "label": mine.label }),
    )
    .await?;
    tx.commit().await?;
    let session_id = api::ServerSessionId::new(sid.to_owned());
    let mut told = 0;
    for p in parties.iter().filter(|p| p.party != mine.party) {
        let address = crate::session_link::party_address(&session_id, index(p.party)?);
        if let Some(route) = state.mailboxes().route(&address).await?
            && state.mailboxes().send(&route, frame.clone()).await?
        {
            told += 1;
        }
    }
    Ok(Json(json!({ "declined": true, "told": told })))
}
