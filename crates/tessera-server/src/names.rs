//! Names shown to people (device and user names): what the registry accepts.
//!
//! A device name is shown next to the other devices of its user when one of them is asked to
//! approve it, so a name must not be able to pass for another: invisible format characters
//! (Unicode general category Cf: bidi overrides, zero-width spaces and joiners) are refused,
//! names are stored in NFC, and a name whose UTS #39 confusable skeleton (case folded) equals the
//! skeleton of another live device of the same user is refused, e.g. `lаptop` with a Cyrillic
//! `а` next to `laptop`, and so is a name with the same party label (below) as another live
//! device of the user, so that a structure's label always means one device.
//!
//! A device is named in a wallet's access structure by its *party label*
//! ([`party_label`]), derived from its name because structure labels are narrower than names
//! (`[a-z0-9._-]`, at most 32 characters, see `tessera_core::structure`): accents are dropped,
//! letters lower-cased, apostrophes removed, every other run of characters outside
//! `[a-z0-9._-]` becomes one `-`, and `-`, `.`, `_` are trimmed from both ends. "Alice's laptop"
//! is `alices-laptop`, "Téléphone" is `telephone`, "phone" is `phone`. A name whose label would
//! be empty, longer than 32 characters, a keyword (`and`, `or`, `threshold`) or `server` (the
//! server's label) gives none: that device cannot be named in a structure (registering it again
//! under another name is the way out).

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::error::{ApiError, ApiResult};

/// Longest name, in bytes (after normalisation).
pub const MAX_NAME_BYTES: usize = 64;

/// Checks a name shown to people and returns it in NFC.
///
/// # Errors
/// [`ApiError::BadRequest`] naming `what` and the reason: empty, too long, a control character,
/// or an invisible format character (with its code point).
pub fn normalise(what: &str, name: &str) -> ApiResult<String> {
    let name: String = name.nfc().collect();
    if name.trim().is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(ApiError::BadRequest(format!(
            "{what} must be 1 to {MAX_NAME_BYTES} bytes of printable characters"
        )));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(ApiError::BadRequest(format!(
            "{what} contains the control character U+{:04X}",
            u32::from(c)
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.general_category() == GeneralCategory::Format)
    {
        return Err(ApiError::BadRequest(format!(
            "{what} contains the invisible format character U+{:04X} (bidi controls and \
             zero-width characters are not allowed in names)",
            u32::from(c)
        )));
    }
    Ok(name)
}

/// The form two names are compared in: the UTS #39 skeleton of the lower-cased name.
#[must_use]
pub fn skeleton(name: &str) -> String {
    let lower = name.to_lowercase();
    unicode_security::confusable_detection::skeleton(&lower).collect()
}

/// Refuses `name` when it could be taken for one of `others` (the user's live devices), or
/// would stand for the same party label in a wallet structure (`Alice's laptop` and
/// `alices laptop` are both `alices-laptop`: a structure naming it could not say which).
///
/// # Errors
/// [`ApiError::Conflict`] naming the device it could be taken for.
pub fn refuse_confusable<'a>(
    name: &str,
    others: impl IntoIterator<Item = &'a str>,
) -> ApiResult<()> {
    let mine = skeleton(name);
    let my_label = party_label(name);
    for other in others {
        if skeleton(other) == mine {
            let how = if other == name {
                "is already the name of"
            } else {
                "looks like the name of"
            };
            return Err(ApiError::Conflict(format!(
                "the device name {name:?} {how} another device of this user ({other:?}); \
                 choose a name that cannot be mistaken for it"
            )));
        }
        if let Some(label) = my_label.as_deref()
            && party_label(other).as_deref() == Some(label)
        {
            return Err(ApiError::Conflict(format!(
                "the device name {name:?} would be named {label:?} in wallet structures, as \
                 another device of this user is ({other:?}); choose a name that differs in \
                 its letters or digits"
            )));
        }
    }
    Ok(())
}

/// The label under which the device named `name` appears in a wallet structure, or none (see the
/// [module documentation](self)).
#[must_use]
pub fn party_label(name: &str) -> Option<String> {
    let mut label = String::with_capacity(name.len());
    let mut gap = false;
    for c in name
        .nfkd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
    {
        if matches!(c, '\'' | '\u{2019}' | '\u{02BC}') {
            continue;
        }
        if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-') {
            if gap && !label.is_empty() {
                label.push('-');
            }
            gap = false;
            label.push(c);
        } else {
            gap = true;
        }
    }
    let label = label.trim_matches(['-', '.', '_']);
    let usable = label != SERVER_LABEL && tessera_core::structure::check_label(label, None).is_ok();
    usable.then(|| label.to_owned())
}

/// The server's label in every wallet structure.
pub const SERVER_LABEL: &str = "server";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_characters_are_refused_and_names_are_nfc() {
        for bad in [
            "laptop\u{202E}",
            "lap\u{200B}top",
            "\u{2066}laptop\u{2069}",
            "lap\u{200D}top",
            "\u{FEFF}laptop",
        ] {
            let e = normalise("device_name", bad).unwrap_err().to_string();
            assert!(e.contains("invisible format character"), "{bad:?}: {e}");
        }
        // e + combining acute (NFD) is stored as é (NFC).
        assert_eq!(normalise("n", "caf\u{65}\u{301}").unwrap(), "caf\u{e9}");
        assert!(normalise("n", "   ").is_err());
        assert!(normalise("n", &"x".repeat(65)).is_err());
        assert!(normalise("n", "tab\there").is_err());
        assert_eq!(normalise("n", "Gina's laptop").unwrap(), "Gina's laptop");
    }

    #[test]
    fn party_labels_of_device_names() {
        for (name, label) in [
            ("phone", Some("phone")),
            ("Phone", Some("phone")),
            ("Alice's laptop", Some("alices-laptop")),
            ("Alice\u{2019}s  work   laptop", Some("alices-work-laptop")),
            ("T\u{e9}l\u{e9}phone", Some("telephone")),
            ("laptop (2023)", Some("laptop-2023")),
            ("usb.key_1", Some("usb.key_1")),
            ("-- tablet --", Some("tablet")),
            ("\u{442}\u{435}\u{43b}\u{435}\u{444}\u{43e}\u{43d}", None),
            ("Server", None),
            ("OR", None),
            ("threshold", None),
            ("!!!", None),
            (&"x".repeat(33), None),
        ] {
            assert_eq!(party_label(name).as_deref(), label, "{name:?}");
        }
        assert_eq!(party_label(&"x".repeat(32)), Some("x".repeat(32)));
    }

    #[test]
    fn confusable_names_are_refused() {
        let existing = ["laptop", "phone"];
        // Cyrillic а and р.
        assert!(refuse_confusable("l\u{430}\u{440}top", existing).is_err());
        assert!(refuse_confusable("laptop", existing).is_err());
        assert!(refuse_confusable("LAPTOP", existing).is_err());
        assert!(refuse_confusable("1aptop", existing).is_err());
        assert!(refuse_confusable("tablet", existing).is_ok());
        assert!(refuse_confusable("laptop 2", existing).is_ok());
        // Not confusable to the eye, but the same party label.
        let e = refuse_confusable("Alice's laptop", ["alices laptop"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"alices-laptop\""), "{e}");
        assert!(refuse_confusable("phone!", existing).is_err());
        assert!(refuse_confusable("alices laptop 2", ["Alice's laptop"]).is_ok());
        // Names without a label never clash by label.
        assert!(refuse_confusable("and", ["And!"]).is_ok());
        assert!(refuse_confusable("\u{4e2d}\u{6587}", ["\u{65e5}\u{672c}"]).is_ok());
    }
}
