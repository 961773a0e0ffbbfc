-- What each allowed signing request lets happen to tokens (issue 17): a JSON array of
-- {"token": "0x…", "amount": "decimal smallest units"}, one entry per decoded transfer or
-- approval, for the per-token 24-hour limits. NULL when it moves no token.
ALTER TABLE sign_requests ADD COLUMN token_amounts TEXT;
-- What an allowed PSBT input's transaction spends from the wallet, for the 24-hour satoshi
-- limit: {"txid": "…", "sat": n}; every input of one transaction names the same txid, which
-- counts once. NULL for other kinds.
ALTER TABLE sign_requests ADD COLUMN btc_spend TEXT;
