//! Storage of the service_accounts area (issue 16). Being written.
