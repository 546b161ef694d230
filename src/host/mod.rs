//! The operator CLI (`outpost`): PKI, images, local QEMU devices, remote control.

pub mod bmap;
pub mod board;
pub mod broker;
pub mod bundle;
pub mod cli;
pub mod client;
pub mod context;
pub mod debian;
pub mod delta;
pub mod flash;
pub mod fleet;
pub mod image;
pub mod image_cmd;
pub mod linkemu;
pub mod local;
pub mod modemsim;
pub mod mosquitto;
pub mod output;
pub mod pki;
pub mod presence;
pub mod qemu;
pub mod remote;
pub mod rollout;
pub mod rollout_cmd;
pub mod serial;
pub mod upload;
