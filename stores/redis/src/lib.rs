//! Redis store (see issue #4).
#![forbid(unsafe_code)]
