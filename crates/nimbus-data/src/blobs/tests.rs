//! End-to-end tests of the bucket backend.
