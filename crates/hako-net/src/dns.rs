//! The resolver for user networks (see `hako-dns`).
