//! Names of PKCS#11 keys: RFC 7512 URIs ("The PKCS #11 URI Scheme"), and the older
//! `pkcs11:module=PATH,token=LABEL,key=LABEL` form, still read but deprecated.
//!
//! The URI (RFC 7512 §2.3):
//!
//! ```text
//! pk11-URI   = "pkcs11:" pk11-path [ "?" pk11-query ]
//! pk11-path  = [ pk11-pattr *(";" pk11-pattr) ]
//! pk11-query = [ pk11-qattr *("&" pk11-qattr) ]
//! pk11-pchar = unreserved / pk11-res-avail / "&" / pct-encoded
//! pk11-qchar = unreserved / pk11-res-avail / "/" / "?" / "|" / pct-encoded
//! pk11-res-avail = ":" / "[" / "]" / "@" / "!" / "$" / "'" / "(" / ")" / "*" / "+" / "," / "="
//! ```
//!
//! Values are percent-decoded; any other character must be percent-encoded (`%20` for a space,
//! `%2F` for a `/` in a path attribute). What the server takes from a URI:
//!
//! - path: `token` (the token's label) and `object` (the key's label), both required; `type`, if
//!   given, must be `secret-key`; `id` (the key's `CKA_ID`, usually all percent-encoded bytes) and
//!   the token's `manufacturer`, `model` and `serial` narrow the choice further.
//! - query: `module-path` (the PKCS#11 module, a shared library), required; `module-name` is
//!   accepted only beside it (§2.4 leaves the meaning of both to the implementation: here
//!   `module-path` wins); the PIN as `pin-value` or `pin-source` (a `file:` URI or an absolute
//!   path; a URI with both is refused, as §2.4 recommends).
//!
//! An attribute may appear once (§2.3). An unrecognised path attribute (a vendor's, or one of
//! §2.3's that the server does not match on: `slot-*`, `library-*`) means the URI matches no
//! key (§2.5): the parser refuses it, naming the attribute. Unrecognised query attributes are
//! ignored (§2.5).

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

use super::Pkcs11Spec;
use crate::error::{Error, Result};

/// Where the PIN of a PKCS#11 key comes from, when its URI says so.
#[derive(Clone)]
pub enum PinSource {
    /// `pin-value=…`: the PIN itself.
    Value(Zeroizing<String>),
    /// `pin-source=file:PATH`: a file holding it (one trailing newline is not part of the PIN).
    File(PathBuf),
}

impl fmt::Debug for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::Value(_) => write!(f, "Value(<redacted>)"),
            PinSource::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl PinSource {
    /// The PIN.
    ///
    /// # Errors
    /// [`Error::Hsm`] naming the PIN file when it cannot be read or is not UTF-8.
    pub fn read(&self) -> Result<Zeroizing<String>> {
        match self {
            PinSource::Value(pin) => Ok(pin.clone()),
            PinSource::File(path) => {
                let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
                    Error::Hsm(format!("cannot read the PIN file {}: {e}", path.display()))
                })?);
                let text = std::str::from_utf8(&bytes).map_err(|_| {
                    Error::Hsm(format!("the PIN file {} is not UTF-8", path.display()))
                })?;
                let pin = text
                    .strip_suffix("\r\n")
                    .or_else(|| text.strip_suffix('\n'))
                    .unwrap_or(text);
                Ok(Zeroizing::new(pin.to_string()))
            }
        }
    }
}

/// A PKCS#11 key as the operator named it: where it is, and where its PIN is if the name says.
#[derive(Clone, Debug)]
pub struct Pkcs11Uri {
    /// The module, token and key.
    pub spec: Pkcs11Spec,
    /// `pin-value` or `pin-source`, if the URI has one.
    pub pin: Option<PinSource>,
    /// Named in the older `pkcs11:module=…,token=…,key=…` form (deprecated: [`Pkcs11Spec`]'s
    /// `Display` is the URI to use instead).
    pub legacy: bool,
}

impl Pkcs11Uri {
    /// Parses an RFC 7512 URI (`pkcs11:token=…;object=…?module-path=…`) or the older form.
    ///
    /// # Errors
    /// [`Error::Hsm`] naming the attribute that is missing, repeated, unknown or badly encoded.
    pub fn parse(text: &str) -> Result<Self> {
        // The scheme is case-insensitive (RFC 3986 §3.1). Errors never quote the text: it may
        // hold a PIN.
        let rest = text
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("pkcs11:"))
            .map(|_| &text[7..])
            .ok_or_else(|| Error::Hsm("not a pkcs11: URI".into()))?;
        if is_legacy(rest) {
            return Ok(Pkcs11Uri {
                spec: parse_legacy(rest)?,
                pin: None,
                legacy: true,
            });
        }
        parse_rfc7512(rest)
    }
}

/// The older form: comma-separated `module=`, `token=` and `key=` (in any order).
fn is_legacy(rest: &str) -> bool {
    rest.contains(',')
        && !rest.contains(';')
        && !rest.contains('?')
        && rest.split(',').all(|part| {
            part.split_once('=')
                .is_some_and(|(k, _)| matches!(k.trim(), "module" | "token" | "key"))
        })
}

fn parse_legacy(rest: &str) -> Result<Pkcs11Spec> {
    let bad = |why: &str| {
        Error::Hsm(format!(
            "{why}: expected pkcs11:token=LABEL;object=LABEL?module-path=PATH (RFC 7512), or the older pkcs11:module=PATH,token=LABEL,key=LABEL"
        ))
    };
    let (mut module, mut token, mut key) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| bad("a part without '='"))?;
        let v = v.trim();
        if v.is_empty() {
            return Err(bad(&format!("empty {}", k.trim())));
        }
        match k.trim() {
            "module" => module = Some(PathBuf::from(v)),
            "token" => token = Some(v.to_string()),
            "key" => key = Some(v.to_string()),
            other => return Err(bad(&format!("unknown part {other:?}"))),
        }
    }
    Ok(Pkcs11Spec {
        module: module.ok_or_else(|| bad("no module"))?,
        token: token.ok_or_else(|| bad("no token"))?,
        key: key.ok_or_else(|| bad("no key"))?,
        ..Pkcs11Spec::default()
    })
}

/// RFC 7512 §2.3 path attributes that the server does not match on.
const UNSUPPORTED_PATH: [&str; 6] = [
    "library-manufacturer",
    "library-description",
    "library-version",
    "slot-manufacturer",
    "slot-description",
    "slot-id",
];

fn parse_rfc7512(rest: &str) -> Result<Pkcs11Uri> {
    let bad = |why: String| Error::Hsm(format!("PKCS#11 URI (RFC 7512): {why}"));
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };

    let mut token = None;
    let mut object = None;
    let mut id = None;
    let mut manufacturer = None;
    let mut model = None;
    let mut serial = None;
    let mut seen: Vec<&str> = Vec::new();
    for attr in split_attributes(path, ';', "path").map_err(bad)? {
        let (name, raw) = attr;
        if seen.contains(&name) {
            return Err(bad(format!(
                "the path attribute {name} appears twice (RFC 7512 §2.3 allows it once)"
            )));
        }
        seen.push(name);
        match name {
            "token" | "object" | "manufacturer" | "model" | "serial" | "id" | "type" => {}
            name if UNSUPPORTED_PATH.contains(&name) => {
                return Err(bad(format!(
                    "the path attribute {name} is not supported: name the token with token= (and manufacturer=, model=, serial=)"
                )));
            }
            "module" | "key" => {
                return Err(bad(format!(
                    "unknown path attribute {name}: the URI names the key with object= and the module with ?module-path= (the older form pkcs11:module=…,token=…,key=… separates its parts with commas)"
                )));
            }
            other => {
                return Err(bad(format!(
                    "unknown path attribute {other} (it would match no key, RFC 7512 §2.5); the server reads token, object, type, id, manufacturer, model and serial"
                )));
            }
        }
        let bytes = decode(raw, name, Component::Path).map_err(bad)?;
        if name == "id" {
            id = Some(bytes);
            continue;
        }
        let value = utf8(bytes, name).map_err(bad)?;
        match name {
            "token" => token = Some(value),
            "object" => object = Some(value),
            "manufacturer" => manufacturer = Some(value),
            "model" => model = Some(value),
            "serial" => serial = Some(value),
            _ if value != "secret-key" => {
                return Err(bad(format!(
                    "type={value}: the key-encryption key is an AES key, type=secret-key"
                )));
            }
            _ => {}
        }
    }

    let mut module_path = None;
    let mut module_name = false;
    let mut pin_value = None;
    let mut pin_source = None;
    let mut seen: Vec<&str> = Vec::new();
    for (name, raw) in split_attributes(query.unwrap_or(""), '&', "query").map_err(bad)? {
        let known = matches!(
            name,
            "module-path" | "module-name" | "pin-value" | "pin-source"
        );
        if !known {
            // RFC 7512 §2.5: unrecognised query attributes are ignored. Their encoding is
            // still checked, so that a stray character is not silently taken for a delimiter.
            decode(raw, name, Component::Query).map_err(bad)?;
            continue;
        }
        if seen.contains(&name) {
            return Err(bad(format!("the query attribute {name} appears twice")));
        }
        seen.push(name);
        let value = utf8(decode(raw, name, Component::Query).map_err(bad)?, name).map_err(bad)?;
        match name {
            "module-path" => module_path = Some(value),
            "module-name" => module_name = true,
            "pin-value" => pin_value = Some(Zeroizing::new(value)),
            _ => pin_source = Some(value),
        }
    }

    let required = |value: Option<String>, name: &str, what: &str| match value {
        Some(v) if !v.is_empty() => Ok(v),
        Some(_) => Err(bad(format!("{name} is empty"))),
        None => Err(bad(format!("no {name}: add {name}=LABEL, {what}"))),
    };
    let token = required(token, "token", "the token's label")?;
    let key = required(object, "object", "the key's label")?;
    let module = match module_path {
        Some(path) if path.is_empty() => return Err(bad("module-path is empty".into())),
        Some(path) => PathBuf::from(path),
        None if module_name => {
            return Err(bad(
                "module-name is not supported: give the module's file with ?module-path=PATH"
                    .into(),
            ));
        }
        None => {
            return Err(bad(
                "no module-path: add ?module-path=PATH, the PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so)".into(),
            ));
        }
    };
    let pin = match (pin_value, pin_source) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "both pin-value and pin-source: give one (RFC 7512 §2.4)".into(),
            ));
        }
        (Some(value), None) => Some(PinSource::Value(value)),
        (None, Some(source)) => Some(PinSource::File(pin_file(&source).map_err(bad)?)),
        (None, None) => None,
    };
    Ok(Pkcs11Uri {
        spec: Pkcs11Spec {
            module,
            token,
            key,
            id,
            manufacturer,
            model,
            serial,
        },
        pin,
        legacy: false,
    })
}

/// `file:/abs/path`, `file:///abs/path` (RFC 8089) or `/abs/path`.
fn pin_file(source: &str) -> std::result::Result<PathBuf, String> {
    let path = match source.strip_prefix("file:") {
        Some(rest) => rest
            .strip_prefix("//localhost")
            .or_else(|| rest.strip_prefix("//"))
            .unwrap_or(rest),
        None => source,
    };
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(format!(
            "pin-source={source}: give the PIN file as file:/absolute/path (no other source is supported)"
        ))
    }
}

type Attributes<'a> = Vec<(&'a str, &'a str)>;

/// `name=value` pairs separated by `sep`; names as RFC 7512's `1*(ALPHA / DIGIT / "-" / "_")`.
fn split_attributes<'a>(
    component: &'a str,
    sep: char,
    which: &str,
) -> std::result::Result<Attributes<'a>, String> {
    if component.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (n, attr) in component.split(sep).enumerate() {
        if attr.is_empty() {
            return Err(format!("an empty {which} attribute (a stray {sep:?})"));
        }
        // Not quoted: a mistyped `pin-value:1234` would put the PIN in the message.
        let (name, value) = attr
            .split_once('=')
            .ok_or_else(|| format!("{which} attribute number {} has no '=' (name=value)", n + 1))?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("{name:?} is not an attribute name"));
        }
        out.push((name, value));
    }
    Ok(out)
}

#[derive(Clone, Copy)]
enum Component {
    Path,
    Query,
}

/// RFC 3986 `unreserved` and RFC 7512's `pk11-res-avail`, plus what the component allows.
fn allowed(c: u8, component: Component) -> bool {
    c.is_ascii_alphanumeric()
        || b"-._~:[]@!$'()*+,=".contains(&c)
        || match component {
            Component::Path => c == b'&',
            Component::Query => b"/?|".contains(&c),
        }
}

/// Percent-decodes `raw`, refusing characters the component must have encoded.
fn decode(raw: &str, name: &str, component: Component) -> std::result::Result<Vec<u8>, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    format!(
                        "{name}: '%' must be followed by two hexadecimal digits (%25 for a '%')"
                    )
                })?;
            out.push(hex);
            i += 3;
        } else if allowed(c, component) {
            out.push(c);
            i += 1;
        } else {
            let ch = raw[i..].chars().next().unwrap_or('?');
            let mut utf8 = [0u8; 4];
            let encoded: String = ch
                .encode_utf8(&mut utf8)
                .bytes()
                .map(|b| format!("%{b:02X}"))
                .collect();
            if name.eq_ignore_ascii_case("pin-value") {
                // Not even one character of a PIN in a message.
                return Err(format!("{name}: a character must be percent-encoded"));
            }
            return Err(format!(
                "{name}: the character {ch:?} must be percent-encoded, as {encoded}"
            ));
        }
    }
    Ok(out)
}

fn utf8(bytes: Vec<u8>, name: &str) -> std::result::Result<String, String> {
    String::from_utf8(bytes).map_err(|_| format!("{name} is not UTF-8 once percent-decoded"))
}

/// Percent-encodes `value` for the component (what [`decode`] reads back).
pub(super) fn encode(value: &[u8], path: bool) -> String {
    let component = if path {
        Component::Path
    } else {
        Component::Query
    };
    let mut out = String::with_capacity(value.len());
    for &b in value {
        // '=' and '&' are allowed by the grammar but read more clearly encoded in a value.
        if allowed(b, component) && b != b'=' && b != b'&' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

    fn err(text: &str) -> String {
        Pkcs11Uri::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_rfc_form() {
        let uri = Pkcs11Uri::parse(&format!(
            "pkcs11:token=tessera;object=kek-1?module-path={MODULE}"
        ))
        .unwrap();
        assert!(!uri.legacy);
        assert!(uri.pin.is_none());
        assert_eq!(uri.spec.module, PathBuf::from(MODULE));
        assert_eq!(uri.spec.token, "tessera");
        assert_eq!(uri.spec.key, "kek-1");
        assert_eq!(uri.spec.id, None);
        // Attributes in any order; type=secret-key accepted.
        let uri = Pkcs11Uri::parse(&format!(
            "pkcs11:type=secret-key;object=kek-1;token=tessera?module-path={MODULE}"
        ))
        .unwrap();
        assert_eq!(uri.spec.key, "kek-1");
    }

    #[test]
    fn percent_encoding_is_decoded() {
        // RFC 7512 §3's example token, a '/' and a ';' in a label, and raw id bytes.
        let uri = Pkcs11Uri::parse(
            "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;object=a%2Fb%3Bc;id=%69%95%3E%5C%F4%BD%EC%91;manufacturer=Snake%20Oil,%20Inc.?module-path=/opt/my%20hsm/lib.so&pin-value=12%2634",
        )
        .unwrap();
        assert_eq!(uri.spec.token, "The Software PKCS#11 Softtoken");
        assert_eq!(uri.spec.key, "a/b;c");
        assert_eq!(
            uri.spec.id.as_deref(),
            Some(&[0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91][..])
        );
        assert_eq!(uri.spec.manufacturer.as_deref(), Some("Snake Oil, Inc."));
        assert_eq!(uri.spec.module, PathBuf::from("/opt/my hsm/lib.so"));
        match uri.pin {
            Some(PinSource::Value(pin)) => assert_eq!(pin.as_str(), "12&34"),
            other => panic!("{other:?}"),
        }
        // Lower-case hex digits too.
        let uri = Pkcs11Uri::parse("pkcs11:token=a%2fb;object=k?module-path=/m.so").unwrap();
        assert_eq!(uri.spec.token, "a/b");
    }

    #[test]
    fn bad_encoding_is_named() {
        let e = err("pkcs11:token=my token;object=k?module-path=/m.so");
        assert!(
            e.contains("token: the character ' ' must be percent-encoded, as %20"),
            "{e}"
        );
        let e = err("pkcs11:token=a/b;object=k?module-path=/m.so");
        assert!(
            e.contains("token: the character '/' must be percent-encoded, as %2F"),
            "{e}"
        );
        let e = err("pkcs11:token=t;object=k%2?module-path=/m.so");
        assert!(
            e.contains("object: '%' must be followed by two hexadecimal digits"),
            "{e}"
        );
        let e = err("pkcs11:token=t;object=k%zz?module-path=/m.so");
        assert!(e.contains("object: '%'"), "{e}");
        let e = err("pkcs11:token=t;object=%FF?module-path=/m.so");
        assert!(e.contains("object is not UTF-8"), "{e}");
        let e = err("pkcs11:token=tëst;object=k?module-path=/m.so");
        assert!(e.contains("as %C3%AB"), "{e}");
    }

    #[test]
    fn missing_attributes_are_named() {
        let e = err("pkcs11:object=k?module-path=/m.so");
        assert!(e.contains("no token: add token=LABEL"), "{e}");
        let e = err("pkcs11:token=t?module-path=/m.so");
        assert!(e.contains("no object: add object=LABEL"), "{e}");
        let e = err("pkcs11:token=t;object=k");
        assert!(e.contains("no module-path"), "{e}");
        let e = err("pkcs11:token=t;object=k?module-name=softhsm2");
        assert!(e.contains("module-name is not supported"), "{e}");
        let e = err("pkcs11:token=;object=k?module-path=/m.so");
        assert!(e.contains("token is empty"), "{e}");
        let e = err("pkcs11:token=t;object=k?module-path=");
        assert!(e.contains("module-path is empty"), "{e}");
        let e = err("pkcs11:");
        assert!(e.contains("no token"), "{e}");
        let e = err("pkcs12:token=t");
        assert!(e.contains("not a pkcs11: URI"), "{e}");
    }

    #[test]
    fn unknown_path_attributes_are_refused_and_unknown_query_attributes_ignored() {
        // §2.5: an unrecognised path attribute matches nothing, so the URI is refused.
        let e = err("pkcs11:token=t;object=k;x-vendor=1?module-path=/m.so");
        assert!(e.contains("unknown path attribute x-vendor"), "{e}");
        let e = err("pkcs11:token=t;object=k;slot-id=3?module-path=/m.so");
        assert!(e.contains("slot-id is not supported"), "{e}");
        let e = err("pkcs11:token=t;object=k;type=private?module-path=/m.so");
        assert!(e.contains("type=private"), "{e}");
        // §2.5: unrecognised query attributes are ignored.
        let uri =
            Pkcs11Uri::parse("pkcs11:token=t;object=k?x-vendor=1&module-path=/m.so&other=a/b")
                .unwrap();
        assert_eq!(uri.spec.module, PathBuf::from("/m.so"));
        // But not characters that break the grammar.
        let e = err("pkcs11:token=t;object=k?x-vendor=a b&module-path=/m.so");
        assert!(e.contains("x-vendor: the character ' '"), "{e}");
        // module-name beside module-path: module-path is used.
        let uri =
            Pkcs11Uri::parse("pkcs11:token=t;object=k?module-name=softhsm2&module-path=/m.so")
                .unwrap();
        assert_eq!(uri.spec.module, PathBuf::from("/m.so"));
    }

    #[test]
    fn repeated_and_malformed_attributes_are_refused() {
        let e = err("pkcs11:token=t;token=u;object=k?module-path=/m.so");
        assert!(e.contains("token appears twice"), "{e}");
        let e = err("pkcs11:token=t;object=k?module-path=/m.so&module-path=/n.so");
        assert!(e.contains("module-path appears twice"), "{e}");
        let e = err("pkcs11:token=t;object=k;?module-path=/m.so");
        assert!(e.contains("empty path attribute"), "{e}");
        let e = err("pkcs11:token=t;object?module-path=/m.so");
        assert!(e.contains("path attribute number 2 has no '='"), "{e}");
        // A PIN typed with the wrong separator, or with a character to encode, is never
        // quoted; nor is an upper-case scheme a reason to quote the text.
        let e = err("pkcs11:token=t;object=k?module-path=/m.so&pin-value:98765");
        assert!(e.contains("query attribute number 2 has no '='"), "{e}");
        assert!(!e.contains("98765"), "{e}");
        let e = err("pkcs11:token=t;object=k?module-path=/m.so&pin-value=98 765");
        assert!(
            !e.contains("98") && !e.contains("765") && !e.contains("' '"),
            "{e}"
        );
        let uri = Pkcs11Uri::parse("PKCS11:token=t;object=k?module-path=/m.so").unwrap();
        assert_eq!(uri.spec.token, "t");
        let e = err("pkcs11:token=t;ob ject=k?module-path=/m.so");
        assert!(e.contains("is not an attribute name"), "{e}");
        // The old form's names in a URI get a hint.
        let e = err("pkcs11:module=/m.so;token=t;key=k");
        assert!(e.contains("separates its parts with commas"), "{e}");
    }

    #[test]
    fn pin_attributes() {
        let uri =
            Pkcs11Uri::parse("pkcs11:token=t;object=k?module-path=/m.so&pin-source=file:/etc/pin")
                .unwrap();
        assert!(matches!(uri.pin, Some(PinSource::File(ref p)) if p == &PathBuf::from("/etc/pin")));
        for source in ["file:///etc/pin", "file://localhost/etc/pin", "/etc/pin"] {
            let uri = Pkcs11Uri::parse(&format!(
                "pkcs11:token=t;object=k?module-path=/m.so&pin-source={source}"
            ))
            .unwrap();
            assert!(
                matches!(uri.pin, Some(PinSource::File(ref p)) if p == &PathBuf::from("/etc/pin")),
                "{source}"
            );
        }
        let e = err("pkcs11:token=t;object=k?module-path=/m.so&pin-source=|/bin/ask-pin");
        assert!(e.contains("file:/absolute/path"), "{e}");
        let e = err("pkcs11:token=t;object=k?module-path=/m.so&pin-source=file:/p&pin-value=1");
        assert!(e.contains("both pin-value and pin-source"), "{e}");
        // The PIN is never in the spec's text, nor in a Debug.
        let uri =
            Pkcs11Uri::parse("pkcs11:token=t;object=k?module-path=/m.so&pin-value=98765").unwrap();
        assert!(!format!("{uri:?}").contains("98765"));
        assert!(!uri.spec.to_string().contains("98765"));
    }

    #[test]
    fn a_pin_file_loses_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pin");
        std::fs::write(&file, "4321\n").unwrap();
        assert_eq!(
            PinSource::File(file.clone()).read().unwrap().as_str(),
            "4321"
        );
        std::fs::write(&file, " 43 21 \r\n").unwrap();
        assert_eq!(
            PinSource::File(file.clone()).read().unwrap().as_str(),
            " 43 21 "
        );
        let e = PinSource::File(dir.path().join("none")).read().unwrap_err();
        assert!(e.to_string().contains("cannot read the PIN file"), "{e}");
    }

    #[test]
    fn the_older_form_is_read_and_marked() {
        let uri =
            Pkcs11Uri::parse(&format!("pkcs11:module={MODULE},token=tessera,key=kek-1")).unwrap();
        assert!(uri.legacy);
        assert_eq!(uri.spec.module, PathBuf::from(MODULE));
        assert_eq!(uri.spec.token, "tessera");
        assert_eq!(uri.spec.key, "kek-1");
        // In any order, with spaces after the commas.
        let again =
            Pkcs11Uri::parse(&format!("pkcs11:key=kek-1, token=tessera, module={MODULE}")).unwrap();
        assert_eq!(again.spec, uri.spec);
        // Its URI, which the deprecation note shows, reads back to the same key.
        let text = uri.spec.to_string();
        assert_eq!(
            text,
            format!("pkcs11:token=tessera;object=kek-1?module-path={MODULE}")
        );
        let back = Pkcs11Uri::parse(&text).unwrap();
        assert!(!back.legacy);
        assert_eq!(back.spec, uri.spec);
        // Its own errors.
        let e = err(&format!("pkcs11:module={MODULE},token=tessera"));
        assert!(e.contains("no key"), "{e}");
        let e = err(&format!("pkcs11:module={MODULE},token=,key=k"));
        assert!(e.contains("empty token"), "{e}");
    }

    #[test]
    fn display_encodes_what_needs_it_and_round_trips() {
        let spec = Pkcs11Spec {
            module: PathBuf::from("/opt/my hsm/lib&.so"),
            token: "My Token; 2/3 = ok".into(),
            key: "kek%1".into(),
            id: Some(vec![0x01, 0xff]),
            manufacturer: None,
            model: Some("m".into()),
            serial: Some("0a1b".into()),
        };
        let text = spec.to_string();
        assert_eq!(
            text,
            "pkcs11:token=My%20Token%3B%202%2F3%20%3D%20ok;object=kek%251;id=%01%FF;model=m;serial=0a1b?module-path=/opt/my%20hsm/lib%26.so"
        );
        assert_eq!(Pkcs11Uri::parse(&text).unwrap().spec, spec);
    }
}
