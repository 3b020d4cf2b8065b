//! `hako` is linked as a position-dependent executable: a PIE of its size
//! spends about a millisecond at every start applying relocations, and a
//! container's `run` starts `hako` twice (the command, the monitor's exit
//! command). Fixed addresses cost nothing at start.
fn main() {
    println!("cargo:rustc-link-arg-bin=hako=-no-pie");
}
