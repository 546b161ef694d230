//! Boot state shared with U-Boot: the U-Boot environment format and the A/B
//! chooser variables (`BOOT_ORDER`, `BOOT_A_LEFT`, `BOOT_B_LEFT`).

mod chooser;
mod env;

pub use chooser::{BootState, Slot, DEFAULT_ATTEMPTS};
pub use env::{Env, EnvError, Layout};

/// File name of the boot-state env on the BOOT partition.
pub const STATE_FILE: &str = "state.env";
/// Size of the env blob (`env export -s 0x4000` in boot.cmd).
pub const STATE_SIZE: usize = 0x4000;
