//! What a transaction's call data, or a signed token permission, does with tokens: ERC-20
//! `transfer`, `approve`, `transferFrom`; ERC-721 and ERC-1155 transfers and operator approvals.
//! Decoded with alloy's ABI support (`sol!`), never with hand-written selectors, so that a
//! policy's token rules and the summary people approve see what will really happen.

use alloy_primitives::U256;
use serde::{Deserialize, Serialize};

/// The token standard a decoded call belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum TokenStandard {
    /// A fungible token (amounts in its smallest unit).
    Erc20,
    /// A non-fungible token (one item per id).
    Erc721,
    /// A multi-token contract (an amount of an id).
    Erc1155,
}

/// What a request lets happen to a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenOperation {
    /// Moves tokens to `to` (`transfer`, `transferFrom`, `safeTransferFrom`, a Permit2
    /// signature transfer).
    Transfer,
    /// Lets `to` (the spender) move up to `amount` (`approve`, an EIP-2612 or Permit2 permit).
    Approve,
    /// Lets `to` (the operator) move every token of the contract (`setApprovalForAll(true)`).
    ApproveAll,
    /// Withdraws an operator's right (`setApprovalForAll(false)`), or an approval of 0.
    Revoke,
}

/// One decoded token action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenAction {
    /// The token contract, lower-case 0x hex.
    pub token: String,
    /// Its standard.
    pub standard: TokenStandard,
    /// What happens.
    pub operation: TokenOperation,
    /// Whose tokens move, when the call names an owner (`transferFrom`); lower-case 0x hex.
    pub from: Option<String>,
    /// The recipient of a transfer, or the spender / operator of an approval; lower-case 0x hex.
    pub to: String,
    /// The amount in the token's smallest unit (1 for an ERC-721 item; the allowance of an
    /// approval).
    pub amount: U256,
    /// The item, for ERC-721 and ERC-1155.
    pub token_id: Option<U256>,
    /// An approval of (close to) the whole supply: `type(uint256).max` or one that no limit
    /// could bound (≥ 2^255), or an operator approval for every item.
    pub unlimited: bool,
}

alloy_sol_types::sol! {
    /// ERC-20 (EIP-20): the calls that move or approve tokens.
    interface Erc20 {
        function transfer(address to, uint256 amount) external returns (bool);
        function approve(address spender, uint256 amount) external returns (bool);
        function transferFrom(address from, address to, uint256 amount) external returns (bool);
    }

    /// ERC-721 (EIP-721): the calls that ERC-20 does not share (`approve` and `transferFrom`
    /// have the same selectors and argument types as ERC-20's).
    interface Erc721 {
        function safeTransferFrom(address from, address to, uint256 tokenId) external;
        function safeTransferFrom(address from, address to, uint256 tokenId, bytes data) external;
        function setApprovalForAll(address operator, bool approved) external;
    }

    /// ERC-1155 (EIP-1155): single and batch transfers (`setApprovalForAll` is ERC-721's).
    interface Erc1155 {
        function safeTransferFrom(address from, address to, uint256 id, uint256 value, bytes data) external;
        function safeBatchTransferFrom(address from, address to, uint256[] ids, uint256[] values, bytes data) external;
    }
}

/// 20-byte Ethereum addresses (the calls' `address` arguments).
pub use alloy_primitives::Address;
/// Encodes the calls above (`Erc20::transferCall { .. }.abi_encode()`): for devices that build
/// call data, and for tests.
pub use alloy_sol_types::SolCall;
use alloy_sol_types::SolInterface;

/// Most items one ERC-1155 batch transfer may list.
pub const MAX_BATCH_ITEMS: usize = 64;

/// What a call does, as far as the decoders understand it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallEffect {
    /// No call data: a plain ether transfer (or a contract creation, which has no callee).
    None,
    /// A token call, decoded: one action (several for an ERC-1155 batch).
    Token(Vec<TokenAction>),
    /// Call data that no decoder understood (or that is not canonically encoded).
    Unknown,
}

fn hex_address(a: Address) -> String {
    format!("{a:#x}")
}

/// `≥ 2^255`: an allowance no per-transaction or daily limit could bound, and the usual way of
/// writing "unlimited" (`type(uint256).max`).
fn is_unlimited(amount: U256) -> bool {
    amount.bit(255)
}

/// Decodes `input`, the call data of a transaction to `contract` (lower-case 0x hex).
///
/// A call is recognised only when its whole call data is the canonical ABI encoding of one of the
/// ERC-20/721/1155 functions above (re-encoded and compared byte for byte: no trailing bytes, no
/// dirty padding), so that what the policy sees is exactly what the contract will read.
/// `approve(address,uint256)` and `transferFrom(address,address,uint256)` mean different things
/// for ERC-20 and ERC-721 with the same bytes: they are read as ERC-20 here, and
/// [`TokenAction::as_standard`] rereads them for a contract the policy lists as ERC-721.
#[must_use]
pub fn decode_call(contract: &str, input: &[u8]) -> CallEffect {
    if input.is_empty() {
        return CallEffect::None;
    }
    let token = contract.to_string();
    let action =
        |standard, operation, from: Option<Address>, to: Address, amount, token_id| TokenAction {
            token: token.clone(),
            standard,
            operation,
            from: from.map(hex_address),
            to: hex_address(to),
            amount,
            token_id,
            unlimited: false,
        };
    let canonical = |encoded: Vec<u8>| encoded == input;
    if let Ok(call) = Erc20::Erc20Calls::abi_decode(input) {
        let (encoded, action) = match call {
            Erc20::Erc20Calls::transfer(c) => (
                c.abi_encode(),
                action(
                    TokenStandard::Erc20,
                    TokenOperation::Transfer,
                    None,
                    c.to,
                    c.amount,
                    None,
                ),
            ),
            Erc20::Erc20Calls::approve(c) => {
                let mut a = action(
                    TokenStandard::Erc20,
                    if c.amount.is_zero() {
                        TokenOperation::Revoke
                    } else {
                        TokenOperation::Approve
                    },
                    None,
                    c.spender,
                    c.amount,
                    None,
                );
                a.unlimited = is_unlimited(c.amount);
                (c.abi_encode(), a)
            }
            Erc20::Erc20Calls::transferFrom(c) => (
                c.abi_encode(),
                action(
                    TokenStandard::Erc20,
                    TokenOperation::Transfer,
                    Some(c.from),
                    c.to,
                    c.amount,
                    None,
                ),
            ),
        };
        return if canonical(encoded) {
            CallEffect::Token(vec![action])
        } else {
            CallEffect::Unknown
        };
    }
    if let Ok(call) = Erc721::Erc721Calls::abi_decode(input) {
        let (encoded, action) = match call {
            Erc721::Erc721Calls::safeTransferFrom_0(c) => (
                c.abi_encode(),
                action(
                    TokenStandard::Erc721,
                    TokenOperation::Transfer,
                    Some(c.from),
                    c.to,
                    U256::from(1u8),
                    Some(c.tokenId),
                ),
            ),
            Erc721::Erc721Calls::safeTransferFrom_1(c) => {
                let a = action(
                    TokenStandard::Erc721,
                    TokenOperation::Transfer,
                    Some(c.from),
                    c.to,
                    U256::from(1u8),
                    Some(c.tokenId),
                );
                (c.abi_encode(), a)
            }
            Erc721::Erc721Calls::setApprovalForAll(c) => {
                let mut a = action(
                    TokenStandard::Erc721,
                    if c.approved {
                        TokenOperation::ApproveAll
                    } else {
                        TokenOperation::Revoke
                    },
                    None,
                    c.operator,
                    U256::ZERO,
                    None,
                );
                a.unlimited = c.approved;
                (c.abi_encode(), a)
            }
        };
        return if canonical(encoded) {
            CallEffect::Token(vec![action])
        } else {
            CallEffect::Unknown
        };
    }
    if let Ok(call) = Erc1155::Erc1155Calls::abi_decode(input) {
        let (encoded, actions) = match call {
            Erc1155::Erc1155Calls::safeTransferFrom(c) => {
                let a = action(
                    TokenStandard::Erc1155,
                    TokenOperation::Transfer,
                    Some(c.from),
                    c.to,
                    c.value,
                    Some(c.id),
                );
                (c.abi_encode(), vec![a])
            }
            Erc1155::Erc1155Calls::safeBatchTransferFrom(c) => {
                if c.ids.len() != c.values.len()
                    || c.ids.is_empty()
                    || c.ids.len() > MAX_BATCH_ITEMS
                {
                    return CallEffect::Unknown;
                }
                let actions = c
                    .ids
                    .iter()
                    .zip(&c.values)
                    .map(|(id, value)| {
                        action(
                            TokenStandard::Erc1155,
                            TokenOperation::Transfer,
                            Some(c.from),
                            c.to,
                            *value,
                            Some(*id),
                        )
                    })
                    .collect();
                (c.abi_encode(), actions)
            }
        };
        return if canonical(encoded) {
            CallEffect::Token(actions)
        } else {
            CallEffect::Unknown
        };
    }
    CallEffect::Unknown
}

impl TokenAction {
    /// The action as a contract of `standard` reads the same call data: ERC-20's
    /// `approve(spender, amount)` and `transferFrom(from, to, amount)` are ERC-721's
    /// `approve(to, tokenId)` and `transferFrom(from, to, tokenId)` (the same selectors and
    /// argument types). Other actions are returned unchanged.
    #[must_use]
    pub fn as_standard(mut self, standard: TokenStandard) -> TokenAction {
        if self.standard == TokenStandard::Erc20
            && standard == TokenStandard::Erc721
            && matches!(
                self.operation,
                TokenOperation::Approve | TokenOperation::Revoke | TokenOperation::Transfer
            )
        {
            self.standard = TokenStandard::Erc721;
            self.token_id = Some(self.amount);
            self.amount = U256::from(1u8);
            self.unlimited = false;
            // `approve(address(0), id)` clears an ERC-721 item's approval; `approve(to, 0)` is
            // an approval of item #0, not the ERC-20 revocation it looked like.
            if self.operation != TokenOperation::Transfer {
                self.operation = if self.to == hex_address(Address::ZERO) {
                    TokenOperation::Revoke
                } else {
                    TokenOperation::Approve
                };
            }
        }
        self
    }

    /// Whether the action can move tokens (a transfer, or an approval that lets someone move
    /// them): what per-token limits count.
    #[must_use]
    pub fn moves_tokens(&self) -> bool {
        matches!(
            self.operation,
            TokenOperation::Transfer | TokenOperation::Approve | TokenOperation::ApproveAll
        )
    }

    /// One phrase for people: `transfer 1.5 USDC (1500000 units of 0xa0b8…) to 0x…`, with the
    /// symbol and decimals when the policy's token list names them (`token`).
    #[must_use]
    pub fn describe(&self, symbol: Option<&str>, decimals: Option<u8>) -> String {
        let what = match (self.standard, self.token_id) {
            (TokenStandard::Erc20, _) | (_, None) => {
                let units = match (symbol, decimals) {
                    (Some(symbol), Some(d)) => format!(
                        "{} {symbol} ({} units of {})",
                        format_units(self.amount, d),
                        self.amount,
                        self.token
                    ),
                    (Some(symbol), None) => {
                        format!("{} units of {symbol} ({})", self.amount, self.token)
                    }
                    (None, _) => format!("{} units of token {}", self.amount, self.token),
                };
                if self.unlimited && self.operation == TokenOperation::Approve {
                    format!("UNLIMITED {units}")
                } else {
                    units
                }
            }
            (TokenStandard::Erc721, Some(id)) => format!(
                "item #{id} of {} ({})",
                symbol.unwrap_or("ERC-721"),
                self.token
            ),
            (TokenStandard::Erc1155, Some(id)) => format!(
                "{} of item #{id} of {} ({})",
                self.amount,
                symbol.unwrap_or("ERC-1155"),
                self.token
            ),
        };
        let from = self
            .from
            .as_ref()
            .map(|f| format!(" from {f}"))
            .unwrap_or_default();
        match self.operation {
            TokenOperation::Transfer => format!("transfer {what}{from} to {}", self.to),
            TokenOperation::Approve => format!("approve {} to spend {what}", self.to),
            TokenOperation::ApproveAll => format!(
                "approve operator {} for EVERY item of {} ({})",
                self.to,
                symbol.unwrap_or("the collection"),
                self.token
            ),
            TokenOperation::Revoke => match self.standard {
                TokenStandard::Erc20 => format!(
                    "revoke {}'s allowance of {}",
                    self.to,
                    symbol.unwrap_or(&self.token)
                ),
                _ => format!(
                    "revoke {}'s approval for {} ({})",
                    self.to,
                    symbol.unwrap_or("the collection"),
                    self.token
                ),
            },
        }
    }
}

/// `amount` in units of 10^-`decimals`, without trailing zeros (`1500000`, 6 → `1.5`).
#[must_use]
pub fn format_units(amount: U256, decimals: u8) -> String {
    let digits = amount.to_string();
    let d = usize::from(decimals);
    if d == 0 {
        return digits;
    }
    let padded = if digits.len() <= d {
        format!("{}{digits}", "0".repeat(d + 1 - digits.len()))
    } else {
        digits
    };
    let (whole, fraction) = padded.split_at(padded.len() - d);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        whole.to_string()
    } else {
        format!("{whole}.{fraction}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48";
    const BOB: Address = Address::repeat_byte(0xb0);
    const ALICE: Address = Address::repeat_byte(0xa1);

    fn one(effect: CallEffect) -> TokenAction {
        match effect {
            CallEffect::Token(mut actions) if actions.len() == 1 => actions.remove(0),
            other => panic!("expected one token action, got {other:?}"),
        }
    }

    #[test]
    fn erc20_calls_are_read_with_their_amounts() {
        let amount = U256::from(10u64).pow(U256::from(30u64));
        let transfer = Erc20::transferCall { to: BOB, amount }.abi_encode();
        // The selector is the ABI's, not one written here: keccak256("transfer(address,uint256)").
        assert_eq!(transfer[..4], [0xa9, 0x05, 0x9c, 0xbb]);
        let a = one(decode_call(TOKEN, &transfer));
        assert_eq!(
            (a.standard, a.operation, a.amount, a.unlimited),
            (
                TokenStandard::Erc20,
                TokenOperation::Transfer,
                amount,
                false
            )
        );
        assert_eq!(a.to, format!("{BOB:#x}"));
        assert_eq!(a.token, TOKEN);

        let approve = Erc20::approveCall {
            spender: BOB,
            amount: U256::MAX,
        }
        .abi_encode();
        let a = one(decode_call(TOKEN, &approve));
        assert_eq!(a.operation, TokenOperation::Approve);
        assert!(a.unlimited);
        assert!(a.describe(None, None).contains("UNLIMITED"));
        let a = one(decode_call(
            TOKEN,
            &Erc20::approveCall {
                spender: BOB,
                amount: U256::ZERO,
            }
            .abi_encode(),
        ));
        assert_eq!(a.operation, TokenOperation::Revoke);

        let from = Erc20::transferFromCall {
            from: ALICE,
            to: BOB,
            amount: U256::from(5u8),
        }
        .abi_encode();
        let a = one(decode_call(TOKEN, &from));
        assert_eq!(a.from.as_deref(), Some(format!("{ALICE:#x}").as_str()));
        assert_eq!(
            a.describe(Some("USDC"), Some(6)),
            format!("transfer 0.000005 USDC (5 units of {TOKEN}) from {ALICE:#x} to {BOB:#x}")
        );
    }

    #[test]
    fn only_canonical_whole_call_data_is_read() {
        let mut transfer = Erc20::transferCall {
            to: BOB,
            amount: U256::from(1u8),
        }
        .abi_encode();
        assert_eq!(decode_call(TOKEN, &[]), CallEffect::None);
        // A trailing byte, a truncated argument, dirty address padding, an unknown selector.
        let mut trailing = transfer.clone();
        trailing.push(0);
        assert_eq!(decode_call(TOKEN, &trailing), CallEffect::Unknown);
        assert_eq!(
            decode_call(TOKEN, &transfer[..transfer.len() - 1]),
            CallEffect::Unknown
        );
        transfer[4] = 0xff;
        assert_eq!(decode_call(TOKEN, &transfer), CallEffect::Unknown);
        assert_eq!(
            decode_call(TOKEN, &[0xde, 0xad, 0xbe, 0xef]),
            CallEffect::Unknown
        );
        assert_eq!(decode_call(TOKEN, &[0xa9]), CallEffect::Unknown);
    }

    #[test]
    fn nft_calls_and_the_erc721_reading_of_erc20_selectors() {
        let id = U256::from(7u8);
        let a = one(decode_call(
            TOKEN,
            &Erc721::safeTransferFrom_0Call {
                from: ALICE,
                to: BOB,
                tokenId: id,
            }
            .abi_encode(),
        ));
        assert_eq!(
            (a.standard, a.token_id, a.amount),
            (TokenStandard::Erc721, Some(id), U256::from(1u8))
        );
        let a = one(decode_call(
            TOKEN,
            &Erc721::setApprovalForAllCall {
                operator: BOB,
                approved: true,
            }
            .abi_encode(),
        ));
        assert_eq!(a.operation, TokenOperation::ApproveAll);
        assert!(a.unlimited);

        // ERC-721 approve(to, tokenId) has ERC-20 approve's bytes: with a huge item id it looks
        // like an unlimited ERC-20 approval until the policy says the contract is ERC-721.
        let big = U256::MAX;
        let a = one(decode_call(
            TOKEN,
            &Erc20::approveCall {
                spender: BOB,
                amount: big,
            }
            .abi_encode(),
        ))
        .as_standard(TokenStandard::Erc721);
        assert_eq!(
            (a.operation, a.token_id, a.amount, a.unlimited),
            (TokenOperation::Approve, Some(big), U256::from(1u8), false)
        );
        // approve(to, 0) is item #0 for ERC-721; approve(address(0), id) clears the approval.
        let zero_id = one(decode_call(
            TOKEN,
            &Erc20::approveCall {
                spender: BOB,
                amount: U256::ZERO,
            }
            .abi_encode(),
        ))
        .as_standard(TokenStandard::Erc721);
        assert_eq!(zero_id.operation, TokenOperation::Approve);
        let cleared = one(decode_call(
            TOKEN,
            &Erc20::approveCall {
                spender: Address::ZERO,
                amount: id,
            }
            .abi_encode(),
        ))
        .as_standard(TokenStandard::Erc721);
        assert_eq!(cleared.operation, TokenOperation::Revoke);
    }

    #[test]
    fn erc1155_batches_list_every_item_and_refuse_mismatched_lengths() {
        let batch = Erc1155::safeBatchTransferFromCall {
            from: ALICE,
            to: BOB,
            ids: vec![U256::from(1u8), U256::from(2u8)],
            values: vec![U256::from(10u8), U256::from(20u8)],
            data: Default::default(),
        };
        match decode_call(TOKEN, &batch.abi_encode()) {
            CallEffect::Token(actions) => {
                assert_eq!(actions.len(), 2);
                assert_eq!(actions[1].token_id, Some(U256::from(2u8)));
                assert_eq!(actions[1].amount, U256::from(20u8));
            }
            other => panic!("{other:?}"),
        }
        let mut bad = batch.clone();
        bad.values.pop();
        assert_eq!(decode_call(TOKEN, &bad.abi_encode()), CallEffect::Unknown);
        let mut empty = batch;
        empty.ids.clear();
        empty.values.clear();
        assert_eq!(decode_call(TOKEN, &empty.abi_encode()), CallEffect::Unknown);
    }

    #[test]
    fn units_are_formatted_without_trailing_zeros() {
        assert_eq!(format_units(U256::from(1_500_000u64), 6), "1.5");
        assert_eq!(format_units(U256::from(5u8), 6), "0.000005");
        assert_eq!(format_units(U256::from(7u8), 0), "7");
        assert_eq!(format_units(U256::from(2_000_000u64), 6), "2");
        assert_eq!(format_units(U256::ZERO, 18), "0");
    }
}
