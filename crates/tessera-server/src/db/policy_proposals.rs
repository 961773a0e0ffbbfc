//! Storage of the policy_proposals area (issue 16). Being written.
