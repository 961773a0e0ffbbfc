//! Finding the pending device an approval code names.

use tessera_api as api;

use crate::{ClientError, Result};

fn refused(status: u16, code: &str, message: String) -> ClientError {
    ClientError::Server {
        status,
        code: code.into(),
        message,
    }
}

/// The one device of `pending` whose approval code is `typed`, with its identity key.
///
/// # Errors
/// [`ClientError::Server`] 400 for a code of the wrong form, 404 when no device shows it, 409
/// when several do: approving "the first" of them could approve an impostor.
pub(crate) fn pending_device_with_code(
    pending: &[api::Device],
    typed: &str,
) -> Result<(api::Device, [u8; 32])> {
    let wanted = api::normalise_approval_code(typed).ok_or_else(|| {
        refused(
            400,
            "bad_request",
            format!(
                "{typed:?} is not an approval code: it is {} hex digits, like \
                 1A2B-3C4D-5E6F-7A8B-9C0D, as the new device printed",
                api::APPROVAL_CODE_HEX_DIGITS
            ),
        )
    })?;
    let matching: Vec<(&api::Device, [u8; 32])> = pending
        .iter()
        .filter(|d| d.status == api::DeviceStatus::Pending)
        .filter_map(|d| {
            let mut key = [0u8; 32];
            hex::decode_to_slice(&d.identity_key, &mut key).ok()?;
            (api::approval_code(&key) == wanted).then_some((d, key))
        })
        .collect();
    match matching.as_slice() {
        [] => Err(refused(
            404,
            "not_found",
            format!("no pending device of this user shows the code {wanted}"),
        )),
        [(device, key)] => Ok(((*device).clone(), *key)),
        several => {
            let ids: Vec<&str> = several.iter().map(|(d, _)| d.device_id.as_str()).collect();
            Err(refused(
                409,
                "conflict",
                format!(
                    "{} pending devices show the code {wanted} ({}): nothing was approved; \
                     revoke the ones you do not recognise and approve again",
                    several.len(),
                    ids.join(", ")
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(id: &str, key: [u8; 32]) -> api::Device {
        api::Device {
            device_id: id.into(),
            user_id: "u".into(),
            name: "laptop".into(),
            identity_key: hex::encode(key),
            status: api::DeviceStatus::Pending,
            registered_at: String::new(),
            last_seen: None,
            revoked_at: None,
        }
    }

    #[test]
    fn one_match_is_approved_an_ambiguous_one_is_refused() {
        let code = api::approval_code(&[7; 32]);
        let other = pending("b", [8; 32]);
        let (d, key) = pending_device_with_code(&[pending("a", [7; 32]), other.clone()], &code)
            .expect("one device shows the code");
        assert_eq!((d.device_id.as_str(), key), ("a", [7; 32]));
        // Lower case and without separators is the same code.
        let typed = code.replace('-', "").to_lowercase();
        assert!(pending_device_with_code(&[pending("a", [7; 32])], &typed).is_ok());

        // Two devices showing one code (a collision someone ground out): nothing is approved.
        let both = [pending("a", [7; 32]), pending("c", [7; 32]), other];
        match pending_device_with_code(&both, &code) {
            Err(ClientError::Server {
                status: 409,
                message,
                ..
            }) => assert!(message.contains("a, c"), "{message}"),
            other => panic!("an ambiguous code was accepted: {other:?}"),
        }
        assert!(matches!(
            pending_device_with_code(&[pending("a", [7; 32])], &code[..9]),
            Err(ClientError::Server { status: 400, .. })
        ));
        assert!(matches!(
            pending_device_with_code(&[pending("b", [8; 32])], &code),
            Err(ClientError::Server { status: 404, .. })
        ));
    }
}
