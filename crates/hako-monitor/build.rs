//! The monitor is linked as a position-dependent executable: its
//! relocated read-only data is then fixed at link time and stays clean,
//! shared between all monitors, instead of being rewritten (and made
//! private) in each one at start. One monitor runs per container, so this
//! is most of what each costs in memory.
fn main() {
    println!("cargo:rustc-link-arg-bin=hako-monitor=-no-pie");
    println!("cargo:rustc-link-arg-bin=hako-monitor=-Wl,-z,norelro");
}
