//! The identifiers the API carries, one type per kind of object, each written in JSON as the
//! plain string it wraps (`#[serde(transparent)]`), so the wire stays what it was.
//!
//! They hold the text as sent: the server checks an id where it uses it (an unknown or malformed
//! one is that endpoint's 400 or 404, not a body that fails to parse). A wallet's id is the hex
//! text of `tessera_core::WalletId`: [`WalletId::parse`] gives that, `From` the other way.
//!
//! With the `sqlx` feature (the server's), each id is also a database text column: bound as a
//! query parameter and read from a row as the string it wraps.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id `text`, as sent or stored.
            #[must_use]
            pub fn new(text: impl Into<String>) -> Self {
                $name(text.into())
            }

            /// The text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The text, owned.
            #[must_use]
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.0)
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                $name(text)
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                $name(text.to_string())
            }
        }

        impl From<&String> for $name {
            fn from(text: &String) -> Self {
                $name(text.clone())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
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
            String: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <String as sqlx::Encode<'q, DB>>::encode_by_ref(&self.0, buf)
            }
        }

        #[cfg(feature = "sqlx")]
        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            String: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                <String as sqlx::Decode<'r, DB>>::decode(value).map($name)
            }
        }
    };
}

text_id!(
    /// A wallet, as the hex text of its `tessera_core::WalletId`.
    WalletId
);
text_id!(
    /// A registered device (a UUID).
    DeviceId
);
text_id!(
    /// A user, the owner of devices and wallets (a UUID).
    UserId
);
text_id!(
    /// A protocol session the server created for a keygen, sign or refresh request (hex): the
    /// handle the device opens `GET /ws?session_id=…` with and approvals name. The protocol's
    /// own `tessera_core::SessionId` is derived from it and the run's parameters.
    ServerSessionId
);
text_id!(
    /// An action held for another device's approval or a time lock (`GET /actions`).
    ActionId
);
text_id!(
    /// A ban of a blamed party (`GET /bans`).
    BanId
);
text_id!(
    /// A durable signing request (`POST /requests`), hex.
    RequestId
);
text_id!(
    /// A user's service account: a backend that creates signing requests with its own key.
    ServiceAccountId
);
text_id!(
    /// A proposed policy version waiting for its admin quorum's signatures.
    ProposalId
);

impl WalletId {
    /// The core id this text names.
    ///
    /// # Errors
    /// [`tessera_core::Error::InvalidParameters`] when it is not 32 hex digits.
    pub fn parse(&self) -> tessera_core::Result<tessera_core::WalletId> {
        tessera_core::WalletId::from_hex(&self.0)
    }
}

impl From<tessera_core::WalletId> for WalletId {
    fn from(id: tessera_core::WalletId) -> Self {
        WalletId(id.to_string())
    }
}

impl From<&tessera_core::WalletId> for WalletId {
    fn from(id: &tessera_core::WalletId) -> Self {
        WalletId(id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_their_text_on_the_wire() {
        let id = DeviceId::new("6f1c2f0e");
        assert_eq!(serde_json::to_string(&id).unwrap(), r#""6f1c2f0e""#);
        assert_eq!(
            serde_json::from_str::<DeviceId>(r#""6f1c2f0e""#).unwrap(),
            id
        );
        assert_eq!(id, "6f1c2f0e");
        assert_eq!(format!("{id}"), "6f1c2f0e");
        assert_eq!(format!("{id:?}"), r#"DeviceId("6f1c2f0e")"#);
    }

    #[test]
    fn a_wallet_id_is_the_hex_of_the_core_id() {
        let core = tessera_core::WalletId::from_bytes([0xab; 16]);
        let id = WalletId::from(core);
        assert_eq!(id, "ab".repeat(16));
        assert_eq!(id.parse().unwrap(), core);
        assert!(WalletId::new("00").parse().is_err());
    }
}
