//! State store (placeholder, filled in below).
