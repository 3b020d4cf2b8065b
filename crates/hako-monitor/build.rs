//! The monitor is linked as a position-dependent executable: its
//! relocated read-only data is then fixed at link time and stays clean,
//! shared between all monitors, instead of being rewritten (and made
//! private) in each one at start. One monitor runs per container, so this
//! is most of what each costs in memory.
fn main() {
    // The static musl build is position-dependent through its relocation
    // model (.cargo/config.toml): with -no-pie alone, rustc would still
    // link musl's static-PIE start code, which crashes without a PIE.
    if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() != Ok("gnu") {
        return;
    }
    println!("cargo:rustc-link-arg-bin=hako-monitor=-no-pie");
    println!("cargo:rustc-link-arg-bin=hako-monitor=-Wl,-z,norelro");
}
