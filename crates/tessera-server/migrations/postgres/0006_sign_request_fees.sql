-- The most a signed transaction can pay in fees (gas_limit × max_fee_per_gas, decimal wei):
-- the value limits of a policy count it with the value. NULL for requests that are not
-- transactions and for those recorded before fees were counted.
ALTER TABLE sign_requests ADD COLUMN max_fee_wei TEXT;
