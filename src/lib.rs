//! Outpost: an immutable, API-only OS for ARM edge boards.
//!
//! The shared modules (`wire`, `config`, `bootstate`, `bundle`, `mqtt`) are leaves: they do
//! no I/O and import nothing from `device` or `host`. `device` is PID 1
//! (`outpost-init`); `host` is the operator CLI (`outpost`). Arrows point from
//! those two down to the shared modules, never between them.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod bootstate;
pub mod bundle;
pub mod config;
pub mod mqtt;
pub mod wire;

#[cfg(feature = "device")]
pub mod device;
#[cfg(feature = "host")]
pub mod host;
