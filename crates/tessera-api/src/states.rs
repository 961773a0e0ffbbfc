//! The states of sessions, signing approvals, devices and held actions, and the kinds of
//! signing request a policy allows: one enum each, used by the server's database layer and on
//! the wire. Each is written as the same text the server always stored and sent (serde and
//! `Display` agree; the migrations' `CHECK` constraints list them, where there is one); a text
//! the enum does not know is refused when parsing ([`UnknownState`] from `FromStr`, serde's
//! "unknown variant" from JSON), never a panic.
//!
//! With the `sqlx` feature (the server's), each is also a database text column: bound as a
//! query parameter and decoded from a row through `FromStr`.

use std::fmt;
use std::str::FromStr;

/// A text that names no value of a state (`FromStr`; the sqlx decoding of a row goes through
/// it): for the server, a row written by a newer build, or edited.
#[derive(Debug)]
pub struct UnknownState {
    /// Which state.
    pub what: &'static str,
    /// The text found.
    pub value: String,
}

impl fmt::Display for UnknownState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} {:?} in the database", self.what, self.value)
    }
}

impl std::error::Error for UnknownState {}

/// Defines a state enum stored as text: `as_str`, `Display`, `FromStr`, serde and sqlx.
macro_rules! text_state {
    (
        $(#[$meta:meta])*
        $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// The stored (and serialised) text.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        /// Only from a JSON string: another text is serde's "unknown variant" naming the
        /// known ones, and a value of another type (a number) an "invalid type" (where
        /// serde's derive for enums would make it a JSON syntax error).
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Text;

                impl serde::de::Visitor<'_> for Text {
                    type Value = $name;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a string naming the ", $what))
                    }

                    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<$name, E> {
                        text.parse()
                            .map_err(|_| E::unknown_variant(text, &[$($text),+]))
                    }
                }

                deserializer.deserialize_str(Text)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;

            fn from_str(text: &str) -> Result<Self, UnknownState> {
                match text {
                    $( $text => Ok($name::$variant), )+
                    other => Err(UnknownState { what: $what, value: other.to_string() }),
                }
            }
        }

        /// A string, one of the texts (by hand: utoipa's derive does not see a `rename` whose
        /// text comes through this macro).
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .description(Some(concat!("The ", $what, ": one of the texts listed.")))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($name))
            }
        }

        #[cfg(feature = "sqlx")]
        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            String: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as sqlx::Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as sqlx::Type<DB>>::compatible(ty)
            }
        }

        #[cfg(feature = "sqlx")]
        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $name
        where
            &'q str: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&'q str as sqlx::Encode<'q, DB>>::encode(self.as_str(), buf)
            }
        }

        #[cfg(feature = "sqlx")]
        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&'r str as sqlx::Decode<'r, DB>>::decode(value)?;
                Ok(text.parse::<$name>()?)
            }
        }
    };
}

text_state! {
    /// Which protocol a session runs (`sessions.protocol`).
    Protocol("protocol") {
        /// A new wallet.
        Keygen = "keygen",
        /// A signature.
        Sign = "sign",
        /// New shares, same key, next epoch.
        Refresh = "refresh",
        /// New shares under a new structure (or set of parties), same key, next epoch.
        Reshare = "reshare",
    }
}

text_state! {
    /// What a party of a structure wallet is (`wallet_parties.kind`).
    PartyKind("party kind") {
        /// The server.
        Server = "server",
        /// A device (of the wallet's owner, or of another user).
        Device = "device",
    }
}

text_state! {
    /// Where a protocol session stands (`sessions.status`).
    SessionStatus("session status") {
        /// Created, not yet opened.
        Created = "created",
        /// A socket runs it.
        Running = "running",
        /// Completed.
        Done = "done",
        /// Ended without completing.
        Failed = "failed",
        /// Ended for lack of messages, or never opened in time.
        Expired = "expired",
    }
}

text_state! {
    /// A signing request's approval (`sign_requests.approval`). `Expired` is never stored: it
    /// is a pending approval read after its window ([`Approval::at`]).
    Approval("approval") {
        /// The policy requires no approval.
        None = "none",
        /// Waiting for another device of the user.
        Pending = "pending",
        /// Approved by another device.
        Approved = "approved",
        /// Refused by another device.
        Refused = "refused",
        /// Pending past its window (derived, not stored).
        Expired = "expired",
    }
}

impl Approval {
    /// Where a request stands at `now`: a pending approval whose window closed is expired;
    /// no request row is [`Approval::None`].
    #[must_use]
    pub fn at(stored: Option<Approval>, expires: Option<i64>, now: i64) -> Approval {
        match (stored, expires) {
            (None, _) => Approval::None,
            (Some(Approval::Pending), Some(exp)) if exp <= now => Approval::Expired,
            (Some(a), _) => a,
        }
    }
}

text_state! {
    /// Where a durable signing request stands (`requests.state`): `awaiting_approval` →
    /// `ready` → `signing` → `signed`, or `refused`, `expired`, `failed` (the ends).
    RequestState("request state") {
        /// Waiting for its approvers to form an authorised set.
        AwaitingApproval = "awaiting_approval",
        /// Approved (or needing no approval): waits for its co-signers to be online.
        Ready = "ready",
        /// A protocol session runs it.
        Signing = "signing",
        /// Signed: the signature is stored with it.
        Signed = "signed",
        /// Refused by an approver whose refusal leaves no authorised set.
        Refused = "refused",
        /// Not signed before its expiry.
        Expired = "expired",
        /// Its signing failed too often to be tried again.
        Failed = "failed",
    }
}

impl RequestState {
    /// Whether the request can change no more.
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RequestState::Signed
                | RequestState::Refused
                | RequestState::Expired
                | RequestState::Failed
        )
    }
}

text_state! {
    /// What a device event tells (`device_events.kind`, `GET /events`).
    EventKind("event kind") {
        /// A request waits for this device's approval.
        ApprovalNeeded = "approval-needed",
        /// A request is ready for this device to co-sign.
        ReadyToSign = "ready-to-sign",
        /// A request this device (or its user's service account) made reached an end.
        RequestEnded = "request-ended",
        /// A new device of the user waits for approval.
        DevicePending = "device-pending",
        /// A wallet waits for this device to join it by resharing.
        ReshareJoin = "reshare-join",
        /// A policy proposal waits for this device's signature.
        PolicyProposal = "policy-proposal",
    }
}

text_state! {
    /// A device's standing (`devices.status`).
    DeviceStatus("device status") {
        /// May authenticate.
        Active = "active",
        /// Waiting for an active device's approval (or a recovery).
        Pending = "pending",
        /// Revoked for good.
        Revoked = "revoked",
    }
}

text_state! {
    /// Where a held action stands (`held_actions.status`).
    HeldStatus("held action status") {
        /// Waiting for an approval or its time lock.
        Pending = "pending",
        /// Approved, not yet carried out.
        Approved = "approved",
        /// Cancelled by a device of the owner.
        Cancelled = "cancelled",
        /// Carried out.
        Released = "released",
    }
}

text_state! {
    /// What a held action is (`held_actions.kind`).
    HeldKind("held action kind") {
        /// `POST /backups/server` to holders other than the wallet's fixed ones.
        ServerShareExport = "server-share-export",
        /// `PUT /policy` weakening a policy that requires approval.
        PolicyChange = "policy-change",
        /// `POST /devices/{id}/recover` while the user has active devices.
        DeviceRecovery = "device-recovery",
    }
}

text_state! {
    /// A kind of signing request, as a policy's `allowed_kinds` names it (the `kind` tag of
    /// [`crate::intent::SignKind`]).
    RequestKind("request kind") {
        /// An Ethereum transaction (legacy, EIP-2930, EIP-1559 or EIP-7702).
        EthTx = "eth-tx",
        /// An EIP-191 personal message.
        EthMessage = "eth-message",
        /// A raw 32-byte digest.
        Digest = "digest",
        /// EIP-712 typed structured data.
        EthTypedData = "eth-typed-data",
        /// An EIP-7702 authorisation: this wallet's account delegates to a contract's code.
        EthAuthorization = "eth-authorization",
        /// The inputs of a Bitcoin PSBT (BIP-174) that the wallet owns.
        BtcPsbt = "btc-psbt",
    }
}

impl RequestKind {
    /// Every kind, in the order a message listing them names them.
    pub const ALL: [RequestKind; 6] = [
        RequestKind::EthTx,
        RequestKind::EthMessage,
        RequestKind::EthTypedData,
        RequestKind::EthAuthorization,
        RequestKind::BtcPsbt,
        RequestKind::Digest,
    ];
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn text_serde_and_parse_agree() {
        for s in [
            SessionStatus::Created,
            SessionStatus::Running,
            SessionStatus::Done,
            SessionStatus::Failed,
            SessionStatus::Expired,
        ] {
            assert_eq!(s.as_str().parse::<SessionStatus>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!(
            serde_json::to_string(&HeldKind::ServerShareExport).unwrap(),
            "\"server-share-export\""
        );
        assert_eq!("approved".parse::<Approval>().unwrap(), Approval::Approved);
    }

    #[test]
    fn an_unknown_state_is_an_error() {
        let e = "paused".parse::<SessionStatus>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown session status \"paused\" in the database"
        );
        assert!("Active".parse::<DeviceStatus>().is_err());
    }

    #[test]
    fn a_pending_approval_expires_at_its_window() {
        assert_eq!(Approval::at(None, None, 10), Approval::None);
        assert_eq!(
            Approval::at(Some(Approval::Pending), Some(10), 10),
            Approval::Expired
        );
        assert_eq!(
            Approval::at(Some(Approval::Pending), Some(11), 10),
            Approval::Pending
        );
        assert_eq!(
            Approval::at(Some(Approval::Approved), Some(1), 10),
            Approval::Approved
        );
    }
}
