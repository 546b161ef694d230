//! Boot state shared with U-Boot: the U-Boot environment format, the two
//! redundant copies on BOOT, and the A/B chooser (`BOOT_ORDER`,
//! `BOOT_A_LEFT`, `BOOT_B_LEFT`, `BOOT_GOOD`, `BOOT_SEQ`) as a pure state
//! machine that `uboot/boot.cmd` implements in U-Boot.

mod chooser;
mod copies;
mod env;

pub use chooser::{
    counter_value, uboot_hextoul, BootState, Choice, ChooserError, Event, Slot, DEFAULT_ATTEMPTS,
    MAX_ATTEMPTS, VAR_A_LEFT, VAR_B_LEFT, VAR_GOOD, VAR_ORDER,
};
pub use copies::{
    decode_copy, encode_copy, initial_copies, seq_newer, CopyId, Current, PlanError, Planned,
    ValidCopy, Write, COPY_FILES, VAR_SEQ,
};
pub use env::{Env, EnvError, Layout};

/// File name of the first boot-state copy on BOOT (the second is
/// `COPY_FILES[1]`).
pub const STATE_FILE: &str = COPY_FILES[0];
/// Size of each copy (`env export -s 0x4000` in boot.cmd).
pub const STATE_SIZE: usize = 0x4000;
