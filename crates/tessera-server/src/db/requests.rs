//! Storage of the requests area (issue 16). Being written.
