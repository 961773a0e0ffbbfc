//! EIP-712 typed structured data (`kind: eth-typed-data`): the server hashes the typed data
//! itself, so that what it signs is what it shows and what its policy judged.
//!
//! The digest is EIP-712's `keccak256(0x19 ‖ 0x01 ‖ domainSeparator ‖ hashStruct(message))`,
//! computed by alloy (`alloy_dyn_abi::TypedData::eip712_signing_hash`); nothing here hashes by
//! hand. Before hashing, the JSON that `eth_signTypedData_v4` takes is checked far more strictly
//! than alloy or eth-account check it, because several of their leniencies let one message mean
//! two things:
//!
//! - alloy computes the domain separator from the domain *values* in EIP-712's canonical order
//!   (`name, version, chainId, verifyingContract, salt`) and ignores `types.EIP712Domain` and any
//!   other domain key, while MetaMask hashes the declared `EIP712Domain` type: a declaration that
//!   differs (another order, another type, a missing or extra field) is refused, as are unknown
//!   domain keys;
//! - alloy reads `"1 ether"`-style integers, `"true"` for a bool, bytes as arrays of numbers and
//!   hex without `0x`; eth-account treats a missing field as zero: here integers are JSON
//!   integers or decimal / `0x`-hex strings in range of their type, bools are JSON booleans,
//!   bytes are `0x` hex of the right length, every declared field must be present and no
//!   undeclared one may be;
//! - a domain without `chainId` makes a signature that is valid on every chain: refused.
//!
//! Size limits bound the work before any of it: [`MAX_TYPED_DATA_BYTES`] of JSON,
//! [`MAX_TYPES`] types, nesting [`MAX_DEPTH`] deep, arrays of [`MAX_ARRAY_LEN`]; recursive types
//! (EIP-712 allows them) are refused too.
//!
//! Token permissions signed off-chain are recognised by their exact type definitions (struct
//! names, field names and field types all equal; a look-alike is hashed and shown but is not
//! a permit), so that a policy's token limits count them:
//! - EIP-2612 `Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)`,
//!   the token being the domain's `verifyingContract`;
//! - DAI's `Permit(address holder,address spender,uint256 nonce,uint256 expiry,bool allowed)`;
//! - Uniswap Permit2's `PermitSingle`, `PermitBatch` (allowances), `PermitTransferFrom`,
//!   `PermitBatchTransferFrom` and their `…Witness…` forms (signature transfers, e.g.
//!   UniswapX orders), whatever the domain: Permit2 lives at [`PERMIT2_ADDRESS`] on most chains
//!   but elsewhere on some (zkSync), and counting a look-alike contract's permit against the
//!   limits only errs on the safe side.
//!
//! What people see is escaped: strings are quoted, cut at [`MAX_SHOWN_CHARS`] characters, and
//! every character other than printable ASCII and letters or digits of any script (so every
//! control, bidi override, zero-width or other invisible character, and the Hangul fillers that
//! render as blanks) is written as `\u{…}`, so that a field cannot pass for another or hide
//! part of itself.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use alloy_dyn_abi::{DynSolValue, PropertyDef, Resolver, TypeDef, TypedData};
use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::Eip712Domain;
use serde_json::Value;
use tessera_core::error::Error;

use crate::calls::{TokenAction, TokenOperation, TokenStandard};

/// Largest typed data accepted, in bytes of its compact JSON.
pub const MAX_TYPED_DATA_BYTES: usize = 64 * 1024;
/// Most types (`EIP712Domain` included) one message may declare.
pub const MAX_TYPES: usize = 64;
/// Deepest nesting of the primary type: each struct level and each array dimension counts one
/// (`Mail { from: Person }` is 2 deep, `Mail { to: Person[] }` 3).
pub const MAX_DEPTH: usize = 8;
/// Longest array, and largest fixed array size, in a message.
pub const MAX_ARRAY_LEN: usize = 256;
/// Characters of a string value shown before it is cut.
pub const MAX_SHOWN_CHARS: usize = 80;
/// Bytes of a `bytes` value shown before it is cut.
pub const MAX_SHOWN_BYTES: usize = 64;
/// Characters of one field's value in the one-line summary before it is cut (the `fields` list
/// keeps it whole).
pub const MAX_SUMMARY_FIELD_CHARS: usize = 200;
/// Longest struct or field name.
const MAX_NAME_LEN: usize = 64;
/// Uniswap Permit2's address on Ethereum and most other chains (lower-case).
pub const PERMIT2_ADDRESS: &str = "0x000000000022d473030f116ddee9f6b43ac78ba3";

/// Typed data, hashed and made readable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypedDataDecoded {
    /// The EIP-712 signing digest.
    pub digest: [u8; 32],
    /// The domain's `chainId` (required: a signature without one is valid on every chain).
    pub chain_id: u64,
    /// The domain's `verifyingContract`, lower-case 0x hex.
    pub verifying_contract: Option<String>,
    /// The domain's `name`, exactly as given: show it only escaped (as the summary does).
    pub domain_name: Option<String>,
    /// The primary type's name (an ASCII identifier).
    pub primary_type: String,
    /// The message's top-level fields in declaration order, each value rendered for people:
    /// addresses lower-case 0x hex, integers decimal, bytes 0x hex, strings quoted and escaped,
    /// arrays `[a, b]`, structs `{name=value, …}`.
    pub fields: Vec<(String, String)>,
    /// The token permissions the message grants (empty unless it is a recognised permit; a
    /// Permit2 batch lists every token).
    pub tokens: Vec<TokenAction>,
    /// One line for people and the audit log: `EIP-712 Mail from "Ether Mail" v1 on chain 1,
    /// contract 0x…: from={…}, to={…}, contents="Hello, Bob!"`.
    pub summary: String,
}

type Result<T> = std::result::Result<T, Error>;

fn bad(why: impl std::fmt::Display) -> Error {
    Error::InvalidParameters(format!("typed data: {why}"))
}

/// Hashes and decodes typed data as `eth_signTypedData_v4` takes it: a JSON object with
/// `types`, `primaryType`, `domain` and `message` (or a JSON string holding one).
///
/// # Errors
/// [`Error::InvalidParameters`] saying what is wrong and where: too large, a missing or unknown
/// key, a malformed, unknown or recursive type, a domain without `chainId` or whose declared
/// `EIP712Domain` does not match it, a message value that is missing, undeclared or not of its
/// field's type, an EIP-2612 or DAI permit without a `verifyingContract`.
pub fn decode_typed_data(value: &Value) -> Result<TypedDataDecoded> {
    let parsed;
    let value = match value {
        Value::String(text) => {
            if text.len() > MAX_TYPED_DATA_BYTES {
                return Err(too_large(text.len()));
            }
            parsed = serde_json::from_str::<Value>(text)
                .map_err(|e| bad(format!("not valid JSON: {e}")))?;
            &parsed
        }
        other => other,
    };
    let size = serde_json::to_vec(value)
        .map_err(|e| bad(format!("cannot be serialised: {e}")))?
        .len();
    if size > MAX_TYPED_DATA_BYTES {
        return Err(too_large(size));
    }
    let top = value.as_object().ok_or_else(|| {
        bad("expected a JSON object with `types`, `primaryType`, `domain` and `message`")
    })?;
    if let Some(key) = top
        .keys()
        .find(|k| !["types", "primaryType", "domain", "message"].contains(&k.as_str()))
    {
        return Err(bad(format!(
            "unknown key `{key}` (expected `types`, `primaryType`, `domain` and `message`)"
        )));
    }
    let get = |key: &str| top.get(key).ok_or_else(|| bad(format!("missing `{key}`")));

    let types = Types::parse(get("types")?)?;
    let primary_type = get("primaryType")?
        .as_str()
        .ok_or_else(|| bad("`primaryType` is not a string"))?;
    if primary_type == DOMAIN_TYPE {
        return Err(bad(
            "`primaryType` is EIP712Domain: a signature over the domain alone is refused",
        ));
    }
    if !types.structs.contains_key(primary_type) {
        return Err(bad(format!(
            "`primaryType` {} is not defined in `types`",
            quote(primary_type)
        )));
    }
    let depth = types.depth(primary_type)?;
    if depth > MAX_DEPTH {
        return Err(bad(format!(
            "{primary_type} is nested {depth} deep, over the limit of {MAX_DEPTH}"
        )));
    }

    let domain = Domain::parse(get("domain")?)?;
    types.check_declared_domain(&domain)?;

    let message = get("message")?;
    types.check_struct(primary_type, message, "message")?;

    let typed = TypedData {
        domain: domain.eip712.clone(),
        resolver: types.resolver()?,
        primary_type: primary_type.to_string(),
        message: message.clone(),
    };
    let coerced = typed
        .coerce()
        .map_err(|e| bad(format!("message does not fit its types: {e}")))?;
    let digest = typed
        .eip712_signing_hash()
        .map_err(|e| bad(format!("cannot be hashed: {e}")))?;
    let Some((_, names, values)) = coerced.as_custom_struct() else {
        return Err(bad(format!("{primary_type} is not a struct")));
    };

    let fields: Vec<(String, String)> = names
        .iter()
        .zip(values)
        .map(|(name, value)| (name.clone(), render(value)))
        .collect();
    let tokens = permits(&types, primary_type, values, &domain)?;
    let summary = summary(primary_type, &domain, &fields);
    Ok(TypedDataDecoded {
        digest: digest.0,
        chain_id: domain.chain_id,
        verifying_contract: domain.eip712.verifying_contract.map(hex_address),
        domain_name: domain.eip712.name.as_deref().map(str::to_string),
        primary_type: primary_type.to_string(),
        fields,
        tokens,
        summary,
    })
}

fn too_large(size: usize) -> Error {
    bad(format!(
        "{size} bytes, over the limit of {MAX_TYPED_DATA_BYTES}"
    ))
}

fn hex_address(a: Address) -> String {
    format!("{a:#x}")
}

const DOMAIN_TYPE: &str = "EIP712Domain";

/// EIP-712's domain fields, in the order the domain separator hashes them.
const DOMAIN_FIELDS: [(&str, &str); 5] = [
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
    ("salt", "bytes32"),
];

/// An elementary Solidity type allowed in EIP-712.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elementary {
    Address,
    Bool,
    String,
    Bytes,
    FixedBytes(usize),
    Uint(usize),
    Int(usize),
}

impl Elementary {
    fn parse(name: &str) -> Option<Self> {
        let size = |digits: &str, min: usize, max: usize, step: usize| {
            let canonical = !digits.is_empty()
                && !digits.starts_with('0')
                && digits.bytes().all(|b| b.is_ascii_digit());
            let n: usize = digits.parse().ok().filter(|_| canonical)?;
            (min..=max)
                .contains(&n)
                .then_some(n)
                .filter(|n| n % step == 0)
        };
        Some(match name {
            "address" => Self::Address,
            "bool" => Self::Bool,
            "string" => Self::String,
            "bytes" => Self::Bytes,
            _ => {
                if let Some(digits) = name.strip_prefix("bytes") {
                    Self::FixedBytes(size(digits, 1, 32, 1)?)
                } else if let Some(digits) = name.strip_prefix("uint") {
                    Self::Uint(size(digits, 8, 256, 8)?)
                } else if let Some(digits) = name.strip_prefix("int") {
                    Self::Int(size(digits, 8, 256, 8)?)
                } else {
                    return None;
                }
            }
        })
    }

    /// Whether `value` is this type's JSON form (strictly: see the module docs).
    fn accepts(self, value: &Value) -> bool {
        match self {
            Self::Address => value.as_str().is_some_and(|s| hex_digits(s, 40)),
            Self::Bool => value.is_boolean(),
            Self::String => value.is_string(),
            Self::Bytes => value
                .as_str()
                .and_then(|s| s.strip_prefix("0x"))
                .is_some_and(|h| h.len() % 2 == 0 && h.bytes().all(|b| b.is_ascii_hexdigit())),
            Self::FixedBytes(n) => value.as_str().is_some_and(|s| hex_digits(s, 2 * n)),
            Self::Uint(bits) => parse_uint(value).is_some_and(|u| u.bit_len() <= bits),
            Self::Int(bits) => parse_int(value).is_some_and(|(negative, magnitude)| {
                // −2^(bits−1) ≤ value < 2^(bits−1)
                let limit = U256::from(1u8) << (bits - 1);
                if negative {
                    magnitude <= limit
                } else {
                    magnitude < limit
                }
            }),
        }
    }
}

fn hex_digits(text: &str, digits: usize) -> bool {
    text.strip_prefix("0x")
        .is_some_and(|h| h.len() == digits && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A non-negative integer: a JSON integer, or a decimal or `0x`-hex string.
fn parse_uint(value: &Value) -> Option<U256> {
    match value {
        Value::Number(n) => n.as_u64().map(U256::from),
        Value::String(s) => parse_uint_text(s),
        _ => None,
    }
}

fn parse_uint_text(s: &str) -> Option<U256> {
    if let Some(hex) = s.strip_prefix("0x") {
        if hex.is_empty() || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        U256::from_str_radix(hex, 16).ok()
    } else {
        if s.is_empty() || s.len() > 78 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        U256::from_str_radix(s, 10).ok()
    }
}

/// A signed integer as (negative, magnitude): a JSON integer, or a decimal string with an
/// optional `-`.
fn parse_int(value: &Value) -> Option<(bool, U256)> {
    match value {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Some((false, U256::from(u)))
            } else {
                n.as_i64().map(|i| (i < 0, U256::from(i.unsigned_abs())))
            }
        }
        Value::String(s) => {
            let (negative, digits) = match s.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, s.as_str()),
            };
            if digits.is_empty() || digits.len() > 78 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            U256::from_str_radix(digits, 10)
                .ok()
                .map(|m| (negative && !m.is_zero(), m))
        }
        _ => None,
    }
}

/// A field's type: an elementary type or a struct, with array dimensions (innermost first, as
/// Solidity reads `uint16[2][]`: a dynamic array of `uint16[2]`).
#[derive(Clone, Debug)]
struct FieldType {
    base: Base,
    dims: Vec<Option<usize>>,
}

#[derive(Clone, Debug)]
enum Base {
    Elementary(Elementary),
    Struct(String),
}

#[derive(Clone, Debug)]
struct Field {
    name: String,
    declared: String,
    ty: FieldType,
}

/// The `types` of a message, checked.
struct Types {
    /// Every declared struct (`EIP712Domain` included), fields in declaration order.
    structs: BTreeMap<String, Vec<Field>>,
}

fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'$')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
        && name.len() <= MAX_NAME_LEN
}

impl Types {
    fn parse(value: &Value) -> Result<Self> {
        let map = value
            .as_object()
            .ok_or_else(|| bad("`types` is not an object"))?;
        if map.len() > MAX_TYPES {
            return Err(bad(format!(
                "{} types, over the limit of {MAX_TYPES}",
                map.len()
            )));
        }
        for name in map.keys() {
            if !is_identifier(name) {
                return Err(bad(format!(
                    "type name {} is not an identifier (ASCII letters, digits, `_`, `$`; at most \
                     {MAX_NAME_LEN})",
                    quote(name)
                )));
            }
            if Elementary::parse(name).is_some() {
                return Err(bad(format!(
                    "type name {name} is an elementary type's name"
                )));
            }
        }
        let mut structs = BTreeMap::new();
        for (name, fields) in map {
            let list = fields
                .as_array()
                .ok_or_else(|| bad(format!("type {name} is not an array of fields")))?;
            let mut parsed: Vec<Field> = Vec::with_capacity(list.len());
            for (i, field) in list.iter().enumerate() {
                let object = field.as_object().filter(|o| o.len() == 2).ok_or_else(|| {
                    bad(format!(
                        "field {i} of type {name} is not an object with just `name` and `type`"
                    ))
                })?;
                let text = |key: &str| {
                    object.get(key).and_then(Value::as_str).ok_or_else(|| {
                        bad(format!("field {i} of type {name} has no string `{key}`"))
                    })
                };
                let field_name = text("name")?;
                let declared = text("type")?;
                if !is_identifier(field_name) {
                    return Err(bad(format!(
                        "field name {} of type {name} is not an identifier",
                        quote(field_name)
                    )));
                }
                if parsed.iter().any(|f| f.name == field_name) {
                    return Err(bad(format!("type {name} declares `{field_name}` twice")));
                }
                let ty = parse_field_type(map, name, field_name, declared)?;
                parsed.push(Field {
                    name: field_name.to_string(),
                    declared: declared.to_string(),
                    ty,
                });
            }
            structs.insert(name.clone(), parsed);
        }
        let types = Types { structs };
        // Refuse recursion anywhere, not only below the primary type.
        let mut memo = BTreeMap::new();
        for name in types.structs.keys() {
            types.depth_of(name, &mut memo, &mut Vec::new())?;
        }
        Ok(types)
    }

    /// How deep `name` nests (see [`MAX_DEPTH`]).
    fn depth(&self, name: &str) -> Result<usize> {
        self.depth_of(name, &mut BTreeMap::new(), &mut Vec::new())
    }

    fn depth_of<'a>(
        &'a self,
        name: &'a str,
        memo: &mut BTreeMap<&'a str, usize>,
        stack: &mut Vec<&'a str>,
    ) -> Result<usize> {
        if let Some(&d) = memo.get(name) {
            return Ok(d);
        }
        if let Some(at) = stack.iter().position(|s| *s == name) {
            let mut cycle: Vec<&str> = stack[at..].to_vec();
            cycle.push(name);
            return Err(bad(format!(
                "type {name} contains itself ({}); recursive types are refused",
                cycle.join(" → ")
            )));
        }
        let Some((key, fields)) = self.structs.get_key_value(name) else {
            return Ok(0);
        };
        stack.push(key);
        let mut deepest = 0;
        for field in fields {
            let inner = match &field.ty.base {
                Base::Struct(s) => self.depth_of(s, memo, stack)?,
                Base::Elementary(_) => 0,
            };
            deepest = deepest.max(field.ty.dims.len() + inner);
        }
        stack.pop();
        memo.insert(key, deepest + 1);
        Ok(deepest + 1)
    }

    /// A declared `EIP712Domain` must be exactly the domain's fields in canonical order: that
    /// is what alloy and eth-account hash, and MetaMask hashes the declaration.
    fn check_declared_domain(&self, domain: &Domain) -> Result<()> {
        let Some(declared) = self.structs.get(DOMAIN_TYPE) else {
            return Ok(());
        };
        let expected: Vec<String> = DOMAIN_FIELDS
            .iter()
            .filter(|(name, _)| domain.keys.contains(*name))
            .map(|(name, ty)| format!("{ty} {name}"))
            .collect();
        let got: Vec<String> = declared
            .iter()
            .map(|f| format!("{} {}", f.declared, f.name))
            .collect();
        if got != expected {
            return Err(bad(format!(
                "types.EIP712Domain is ({}) but the domain's fields are ({}): it must list \
                 exactly the domain's fields, in that order and with those types",
                got.join(","),
                expected.join(",")
            )));
        }
        Ok(())
    }

    /// Checks that `value` is a `name` struct: every declared field present and of its type,
    /// nothing else.
    fn check_struct(&self, name: &str, value: &Value, path: &str) -> Result<()> {
        let object = value
            .as_object()
            .ok_or_else(|| bad(format!("{path} is not an object (a {name})")))?;
        let fields = self
            .structs
            .get(name)
            .ok_or_else(|| bad(format!("unknown type {name}")))?;
        for field in fields {
            let at = format!("{path}.{}", field.name);
            let value = object.get(&field.name).ok_or_else(|| {
                bad(format!(
                    "{name} is missing field `{}` (at {at})",
                    field.name
                ))
            })?;
            self.check_field(name, field, field.ty.dims.len(), value, &at)?;
        }
        if let Some(extra) = object
            .keys()
            .find(|k| !fields.iter().any(|f| f.name == **k))
        {
            return Err(bad(format!(
                "{path} has field {}, which {name} does not declare",
                quote(extra)
            )));
        }
        Ok(())
    }

    /// Checks `value` against `field`'s type with only its innermost `dims` array dimensions.
    fn check_field(
        &self,
        owner: &str,
        field: &Field,
        dims: usize,
        value: &Value,
        path: &str,
    ) -> Result<()> {
        let not_a = || {
            bad(format!(
                "field `{}` of {owner} is not {} {} (at {path})",
                field.name,
                article(&field.declared),
                field.declared
            ))
        };
        if dims > 0 {
            let items = value.as_array().ok_or_else(not_a)?;
            if items.len() > MAX_ARRAY_LEN {
                return Err(bad(format!(
                    "{path} has {} elements, over the limit of {MAX_ARRAY_LEN}",
                    items.len()
                )));
            }
            if let Some(Some(n)) = field.ty.dims.get(dims - 1)
                && items.len() != *n
            {
                return Err(bad(format!(
                    "{path} has {} elements where field `{}` of {owner} ({}) needs {n}",
                    items.len(),
                    field.name,
                    field.declared
                )));
            }
            for (i, item) in items.iter().enumerate() {
                self.check_field(owner, field, dims - 1, item, &format!("{path}[{i}]"))?;
            }
            return Ok(());
        }
        match &field.ty.base {
            Base::Struct(s) => self.check_struct(s, value, path),
            Base::Elementary(e) if e.accepts(value) => Ok(()),
            Base::Elementary(_) => Err(not_a()),
        }
    }

    fn resolver(&self) -> Result<Resolver> {
        let mut resolver = Resolver::default();
        for (name, fields) in &self.structs {
            let props = fields
                .iter()
                .map(|f| PropertyDef::new(f.declared.clone(), f.name.clone()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("type {name}: {e}")))?;
            let def =
                TypeDef::new(name.clone(), props).map_err(|e| bad(format!("type {name}: {e}")))?;
            resolver.ingest(def);
        }
        Ok(resolver)
    }

    /// The fields of struct `name` as `(name, type)` pairs, for comparing with a known
    /// definition.
    fn signature(&self, name: &str) -> Option<Vec<(&str, &str)>> {
        self.structs.get(name).map(|fields| {
            fields
                .iter()
                .map(|f| (f.name.as_str(), f.declared.as_str()))
                .collect()
        })
    }

    fn is(&self, name: &str, expected: &[(&str, &str)]) -> bool {
        self.signature(name).is_some_and(|s| s == expected)
    }
}

/// "a uint256", "an address", "an Order".
fn article(type_name: &str) -> &'static str {
    match type_name.bytes().next().map(|b| b.to_ascii_lowercase()) {
        Some(b'a' | b'e' | b'i' | b'o') => "an",
        _ => "a",
    }
}

fn parse_field_type(
    types: &serde_json::Map<String, Value>,
    owner: &str,
    field: &str,
    declared: &str,
) -> Result<FieldType> {
    let malformed = || {
        bad(format!(
            "field `{field}` of type {owner} has a malformed type {}",
            quote(declared)
        ))
    };
    let (base, mut rest) = match declared.find('[') {
        Some(i) => declared.split_at(i),
        None => (declared, ""),
    };
    let mut dims = Vec::new();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[').ok_or_else(malformed)?;
        let end = inner.find(']').ok_or_else(malformed)?;
        let (digits, after) = inner.split_at(end);
        rest = &after[1..];
        if digits.is_empty() {
            dims.push(None);
        } else {
            if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed());
            }
            let n: usize = digits.parse().map_err(|_| malformed())?;
            if n > MAX_ARRAY_LEN {
                return Err(bad(format!(
                    "field `{field}` of type {owner} is an array of {n}, over the limit of \
                     {MAX_ARRAY_LEN}"
                )));
            }
            dims.push(Some(n));
        }
    }
    let base = if let Some(e) = Elementary::parse(base) {
        Base::Elementary(e)
    } else if types.contains_key(base) {
        Base::Struct(base.to_string())
    } else if base == "uint" || base == "int" {
        return Err(bad(format!(
            "field `{field}` of type {owner} is `{base}`, which EIP-712 does not allow (write \
             {base}256)"
        )));
    } else if is_identifier(base) {
        return Err(bad(format!("type {owner} references unknown type {base}")));
    } else {
        return Err(malformed());
    };
    Ok(FieldType { base, dims })
}

/// The domain, checked.
struct Domain {
    eip712: Eip712Domain,
    chain_id: u64,
    /// The domain's keys, for comparing with a declared `EIP712Domain`.
    keys: BTreeSet<String>,
}

impl Domain {
    fn parse(value: &Value) -> Result<Self> {
        let object = value
            .as_object()
            .ok_or_else(|| bad("`domain` is not an object"))?;
        if let Some(key) = object
            .keys()
            .find(|k| !DOMAIN_FIELDS.iter().any(|(name, _)| name == k))
        {
            return Err(bad(format!(
                "domain has unknown field {} (EIP-712 domains have name, version, chainId, \
                 verifyingContract and salt)",
                quote(key)
            )));
        }
        let text = |key: &str| -> Result<Option<String>> {
            object
                .get(key)
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad(format!("domain `{key}` is not a string")))
                })
                .transpose()
        };
        let name = text("name")?;
        let version = text("version")?;
        let chain = object.get("chainId").ok_or_else(|| {
            bad("the domain has no `chainId`: a signature without one is valid on every chain")
        })?;
        let chain_id = parse_uint(chain)
            .and_then(|c| u64::try_from(c).ok())
            .filter(|c| *c != 0)
            .ok_or_else(|| {
                bad("domain `chainId` is not a chain id (a positive integer below 2^64)")
            })?;
        let verifying_contract = object
            .get("verifyingContract")
            .map(|v| {
                v.as_str()
                    .filter(|s| hex_digits(s, 40))
                    .and_then(|s| s.parse::<Address>().ok())
                    .ok_or_else(|| bad("domain `verifyingContract` is not a 0x-hex address"))
            })
            .transpose()?;
        let salt = object
            .get("salt")
            .map(|v| {
                v.as_str()
                    .filter(|s| hex_digits(s, 64))
                    .and_then(|s| s.parse::<B256>().ok())
                    .ok_or_else(|| bad("domain `salt` is not 32 bytes of 0x hex"))
            })
            .transpose()?;
        Ok(Domain {
            eip712: Eip712Domain::new(
                name.map(Cow::Owned),
                version.map(Cow::Owned),
                Some(U256::from(chain_id)),
                verifying_contract,
                salt,
            ),
            chain_id,
            keys: object.keys().cloned().collect(),
        })
    }
}

// --- Permits ---------------------------------------------------------------------------------

const EIP2612_PERMIT: [(&str, &str); 5] = [
    ("owner", "address"),
    ("spender", "address"),
    ("value", "uint256"),
    ("nonce", "uint256"),
    ("deadline", "uint256"),
];
const DAI_PERMIT: [(&str, &str); 5] = [
    ("holder", "address"),
    ("spender", "address"),
    ("nonce", "uint256"),
    ("expiry", "uint256"),
    ("allowed", "bool"),
];
const PERMIT_DETAILS: [(&str, &str); 4] = [
    ("token", "address"),
    ("amount", "uint160"),
    ("expiration", "uint48"),
    ("nonce", "uint48"),
];
const TOKEN_PERMISSIONS: [(&str, &str); 2] = [("token", "address"), ("amount", "uint256")];
const PERMIT_SINGLE: [(&str, &str); 3] = [
    ("details", "PermitDetails"),
    ("spender", "address"),
    ("sigDeadline", "uint256"),
];
const PERMIT_BATCH: [(&str, &str); 3] = [
    ("details", "PermitDetails[]"),
    ("spender", "address"),
    ("sigDeadline", "uint256"),
];
const PERMIT_TRANSFER_FROM: [(&str, &str); 4] = [
    ("permitted", "TokenPermissions"),
    ("spender", "address"),
    ("nonce", "uint256"),
    ("deadline", "uint256"),
];
const PERMIT_BATCH_TRANSFER_FROM: [(&str, &str); 4] = [
    ("permitted", "TokenPermissions[]"),
    ("spender", "address"),
    ("nonce", "uint256"),
    ("deadline", "uint256"),
];

/// The token actions a recognised permit grants; `values` are the primary struct's fields.
fn permits(
    types: &Types,
    primary: &str,
    values: &[DynSolValue],
    domain: &Domain,
) -> Result<Vec<TokenAction>> {
    let field = |i: usize| values.get(i);
    let address = |v: Option<&DynSolValue>| v.and_then(DynSolValue::as_address);
    let uint = |v: Option<&DynSolValue>| v.and_then(DynSolValue::as_uint).map(|(u, _)| u);
    let token_contract = |kind: &str| {
        domain
            .eip712
            .verifying_contract
            .map(hex_address)
            .ok_or_else(|| {
                bad(format!(
                    "{kind} permit without the domain's `verifyingContract` (the token)"
                ))
            })
    };
    let erc20 =
        |token: String, operation, from: Option<Address>, to: Address, amount: U256| TokenAction {
            token,
            standard: TokenStandard::Erc20,
            operation,
            from: from.map(hex_address),
            to: hex_address(to),
            amount,
            token_id: None,
            unlimited: false,
        };
    let unreadable = || bad(format!("{primary}: a permit field has an unexpected value"));

    if primary == "Permit" && types.is(primary, &EIP2612_PERMIT) {
        let (Some(owner), Some(spender), Some(value)) =
            (address(field(0)), address(field(1)), uint(field(2)))
        else {
            return Err(unreadable());
        };
        let operation = if value.is_zero() {
            TokenOperation::Revoke
        } else {
            TokenOperation::Approve
        };
        let mut action = erc20(
            token_contract("an EIP-2612")?,
            operation,
            Some(owner),
            spender,
            value,
        );
        // ≥ 2^255, as calls.rs: no limit could bound it.
        action.unlimited = value.bit(255);
        return Ok(vec![action]);
    }
    if primary == "Permit" && types.is(primary, &DAI_PERMIT) {
        let (Some(holder), Some(spender), Some(allowed)) = (
            address(field(0)),
            address(field(1)),
            field(4).and_then(DynSolValue::as_bool),
        ) else {
            return Err(unreadable());
        };
        let token = token_contract("a DAI-style")?;
        let mut action = if allowed {
            erc20(
                token,
                TokenOperation::Approve,
                Some(holder),
                spender,
                U256::MAX,
            )
        } else {
            erc20(
                token,
                TokenOperation::Revoke,
                Some(holder),
                spender,
                U256::ZERO,
            )
        };
        action.unlimited = allowed;
        return Ok(vec![action]);
    }

    // Permit2 allowances: (token, amount) pairs from PermitDetails.
    let details = |v: &DynSolValue| -> Option<(Address, U256)> {
        let (_, _, d) = v.as_custom_struct()?;
        Some((address(d.first())?, uint(d.get(1))?))
    };
    let allowance = |(token, amount): (Address, U256), spender: Address| {
        let operation = if amount.is_zero() {
            TokenOperation::Revoke
        } else {
            TokenOperation::Approve
        };
        let mut action = erc20(hex_address(token), operation, None, spender, amount);
        // ≥ 2^159: half of uint160's range, which Permit2 reads as "unlimited" at its maximum.
        action.unlimited = amount.bit(159);
        action
    };
    let permit2_details = types.is("PermitDetails", &PERMIT_DETAILS);
    if primary == "PermitSingle" && permit2_details && types.is(primary, &PERMIT_SINGLE) {
        let (Some(d), Some(spender)) = (field(0).and_then(details), address(field(1))) else {
            return Err(unreadable());
        };
        return Ok(vec![allowance(d, spender)]);
    }
    if primary == "PermitBatch" && permit2_details && types.is(primary, &PERMIT_BATCH) {
        let (Some(list), Some(spender)) =
            (field(0).and_then(DynSolValue::as_array), address(field(1)))
        else {
            return Err(unreadable());
        };
        return list
            .iter()
            .map(|v| {
                details(v)
                    .map(|d| allowance(d, spender))
                    .ok_or_else(unreadable)
            })
            .collect();
    }

    // Permit2 signature transfers: the spender chooses the recipient, so `to` is the spender.
    let transfer = |v: &DynSolValue, spender: Address| {
        details(v).map(|(token, amount)| {
            erc20(
                hex_address(token),
                TokenOperation::Transfer,
                None,
                spender,
                amount,
            )
        })
    };
    if !types.is("TokenPermissions", &TOKEN_PERMISSIONS) {
        return Ok(Vec::new());
    }
    let with_witness = |base: &[(&str, &str)]| {
        types.signature(primary).is_some_and(|s| {
            s.len() == base.len() + 1 && s[..base.len()] == *base && s[base.len()].0 == "witness"
        })
    };
    let single = (primary == "PermitTransferFrom" && types.is(primary, &PERMIT_TRANSFER_FROM))
        || (primary == "PermitWitnessTransferFrom" && with_witness(&PERMIT_TRANSFER_FROM));
    let batch = (primary == "PermitBatchTransferFrom"
        && types.is(primary, &PERMIT_BATCH_TRANSFER_FROM))
        || (primary == "PermitBatchWitnessTransferFrom"
            && with_witness(&PERMIT_BATCH_TRANSFER_FROM));
    if single {
        let (Some(permitted), Some(spender)) = (field(0), address(field(1))) else {
            return Err(unreadable());
        };
        return Ok(vec![transfer(permitted, spender).ok_or_else(unreadable)?]);
    }
    if batch {
        let (Some(list), Some(spender)) =
            (field(0).and_then(DynSolValue::as_array), address(field(1)))
        else {
            return Err(unreadable());
        };
        return list
            .iter()
            .map(|v| transfer(v, spender).ok_or_else(unreadable))
            .collect();
    }
    Ok(Vec::new())
}

// --- What people see -------------------------------------------------------------------------

/// Hangul fillers: letters (so `is_alphanumeric`) that render as nothing.
const INVISIBLE_LETTERS: [char; 4] = ['\u{115F}', '\u{1160}', '\u{3164}', '\u{FFA0}'];

fn shown_as_is(c: char) -> bool {
    if c.is_ascii() {
        c == ' ' || c.is_ascii_graphic()
    } else {
        c.is_alphanumeric() && !INVISIBLE_LETTERS.contains(&c)
    }
}

/// `text` quoted for people: escaped (see the module docs), cut at [`MAX_SHOWN_CHARS`]
/// characters with the full length after it.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(4 * MAX_SHOWN_CHARS) + 2);
    out.push('"');
    for c in text.chars().take(MAX_SHOWN_CHARS) {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if shown_as_is(c) => out.push(c),
            c => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
        }
    }
    out.push('"');
    let chars = text.chars().count();
    if chars > MAX_SHOWN_CHARS {
        out.push_str(&format!("… ({chars} characters)"));
    }
    out
}

fn hex_bytes(bytes: &[u8]) -> String {
    if bytes.len() > MAX_SHOWN_BYTES {
        format!(
            "0x{}… ({} bytes)",
            hex::encode(&bytes[..MAX_SHOWN_BYTES]),
            bytes.len()
        )
    } else {
        format!("0x{}", hex::encode(bytes))
    }
}

fn render(value: &DynSolValue) -> String {
    match value {
        DynSolValue::Address(a) => hex_address(*a),
        DynSolValue::Bool(b) => b.to_string(),
        DynSolValue::Uint(u, _) => u.to_string(),
        DynSolValue::Int(i, _) => i.to_string(),
        DynSolValue::FixedBytes(word, n) => hex_bytes(&word[..(*n).min(32)]),
        DynSolValue::Bytes(b) => hex_bytes(b),
        DynSolValue::String(s) => quote(s),
        DynSolValue::Array(items) | DynSolValue::FixedArray(items) | DynSolValue::Tuple(items) => {
            let inner: Vec<String> = items.iter().map(render).collect();
            format!("[{}]", inner.join(", "))
        }
        DynSolValue::CustomStruct {
            prop_names, tuple, ..
        } => {
            let inner: Vec<String> = prop_names
                .iter()
                .zip(tuple)
                .map(|(name, v)| format!("{name}={}", render(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        // Not an EIP-712 type: the checks above never let one through.
        other => format!("{other:?}"),
    }
}

fn summary(primary: &str, domain: &Domain, fields: &[(String, String)]) -> String {
    let d = &domain.eip712;
    let mut head = format!("EIP-712 {primary}");
    if let Some(name) = &d.name {
        head.push_str(&format!(" from {}", quote(name)));
    }
    if let Some(version) = &d.version {
        let plain = !version.is_empty()
            && version.len() <= 16
            && version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if plain {
            head.push_str(&format!(" v{version}"));
        } else {
            head.push_str(&format!(" version {}", quote(version)));
        }
    }
    head.push_str(&format!(" on chain {}", domain.chain_id));
    if let Some(contract) = d.verifying_contract {
        head.push_str(&format!(", contract {}", hex_address(contract)));
    }
    if let Some(salt) = d.salt {
        head.push_str(&format!(", salt {salt:#x}"));
    }
    let body: Vec<String> = fields
        .iter()
        .map(|(name, value)| {
            let count = value.chars().count();
            if count > MAX_SUMMARY_FIELD_CHARS {
                let cut: String = value.chars().take(MAX_SUMMARY_FIELD_CHARS).collect();
                format!("{name}={cut}… ({count} characters)")
            } else {
                format!("{name}={value}")
            }
        })
        .collect();
    format!("{head}: {}", body.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn elementary_types_parse_only_in_canonical_form() {
        assert_eq!(Elementary::parse("uint256"), Some(Elementary::Uint(256)));
        assert_eq!(Elementary::parse("int8"), Some(Elementary::Int(8)));
        assert_eq!(
            Elementary::parse("bytes32"),
            Some(Elementary::FixedBytes(32))
        );
        assert_eq!(Elementary::parse("bytes1"), Some(Elementary::FixedBytes(1)));
        for bad in [
            "uint",
            "int",
            "uint0",
            "uint7",
            "uint264",
            "uint08",
            "bytes0",
            "bytes33",
            "bytes01",
            "byte",
            "function",
            "fixed128x18",
            "Uint256",
        ] {
            assert_eq!(Elementary::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn integers_are_checked_against_their_width() {
        let uint8 = Elementary::Uint(8);
        assert!(uint8.accepts(&json!(255)));
        assert!(uint8.accepts(&json!("255")));
        assert!(uint8.accepts(&json!("0xff")));
        assert!(!uint8.accepts(&json!(256)));
        assert!(!uint8.accepts(&json!(-1)));
        assert!(!uint8.accepts(&json!(1.5)));
        assert!(!uint8.accepts(&json!("1 ether")));
        assert!(!uint8.accepts(&json!("+1")));
        assert!(!uint8.accepts(&json!("0x")));
        let int8 = Elementary::Int(8);
        assert!(int8.accepts(&json!(-128)));
        assert!(int8.accepts(&json!("-128")));
        assert!(int8.accepts(&json!(127)));
        assert!(!int8.accepts(&json!(128)));
        assert!(!int8.accepts(&json!(-129)));
        assert!(!int8.accepts(&json!("-")));
        assert!(!int8.accepts(&json!("0x7f")));
        assert!(Elementary::Bool.accepts(&json!(true)));
        assert!(!Elementary::Bool.accepts(&json!("true")));
        assert!(Elementary::Bytes.accepts(&json!("0x")));
        assert!(!Elementary::Bytes.accepts(&json!("0xabc")));
        assert!(!Elementary::Bytes.accepts(&json!([1, 2])));
        assert!(!Elementary::FixedBytes(2).accepts(&json!("0x12")));
        assert!(!Elementary::Address.accepts(&json!("cd2a3d9f938e13cd947ec05abc7fe734df8dd826")));
    }

    #[test]
    fn quoting_escapes_what_could_deceive() {
        assert_eq!(quote("Hello, Bob!"), "\"Hello, Bob!\"");
        assert_eq!(quote("Grüße 世界"), "\"Grüße 世界\"");
        assert_eq!(
            quote("a\u{202e}b\u{200b}c\u{3164}\n\"\\"),
            "\"a\\u{202e}b\\u{200b}c\\u{3164}\\u{a}\\\"\\\\\""
        );
        let long = "x".repeat(100);
        assert_eq!(
            quote(&long),
            format!("\"{}\"… (100 characters)", "x".repeat(80))
        );
    }

    #[test]
    fn field_types_with_array_dimensions() {
        let types = json!({"S": []});
        let map = types.as_object().unwrap();
        let t = parse_field_type(map, "T", "f", "uint16[2][]").unwrap();
        assert_eq!(t.dims, vec![Some(2), None]);
        assert!(matches!(t.base, Base::Elementary(Elementary::Uint(16))));
        let t = parse_field_type(map, "T", "f", "S[]").unwrap();
        assert!(matches!(t.base, Base::Struct(ref s) if s == "S"));
        for bad in [
            "uint16[",
            "uint16[]x",
            "uint16[02]",
            "uint16[-1]",
            "S[ ]",
            "uint16[257]",
        ] {
            assert!(parse_field_type(map, "T", "f", bad).is_err(), "{bad}");
        }
        let err = parse_field_type(map, "Mail", "to", "Persn")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("type Mail references unknown type Persn"),
            "{err}"
        );
    }
}
