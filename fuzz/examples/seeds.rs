//! Write the seed corpus: `fuzz/seeds/<target>/<name>`, after checking that
//! each seed passes its target. Run after changing a message or a target:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (target, seeds) in outpost_fuzz::seeds::all() {
        let dir = root.join(target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let check = outpost_fuzz::seeds::check_for(target);
        for (name, bytes) in seeds {
            check(&bytes);
            std::fs::write(dir.join(name), &bytes)?;
        }
    }
    println!("seeds written to {}", root.display());
    Ok(())
}
