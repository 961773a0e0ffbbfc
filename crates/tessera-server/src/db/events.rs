//! Storage of the events area (issue 16). Being written.
