//! Embedded PostgreSQL
