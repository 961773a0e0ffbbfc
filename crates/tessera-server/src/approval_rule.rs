//! Approval rules: an access structure over approver labels (devices or users). Being written.
