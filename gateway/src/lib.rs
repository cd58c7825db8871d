//! S3 gateway on axum. Built in the S3 milestone; see docs/ARCHITECTURE.md.
