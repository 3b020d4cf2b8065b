//! Unpacks a layer tar (plain, gzip or zstd) into a temporary directory
//! and prints how fast: `cargo run --release -p hako-image --example
//! unpack_bench -- LAYER.tar [-]` (`-` reads the tar from stdin instead).

use std::io::{BufRead, BufReader, Read};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = std::env::args()
        .nth(1)
        .ok_or("usage: unpack_bench LAYER.tar (or - for stdin)")?;
    let input: Box<dyn Read + Send> = if arg == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(&arg)?)
    };
    let mut buffered = BufReader::with_capacity(256 << 10, input);
    let kind = hako_image::Compression::sniff(buffered.fill_buf()?);
    let tmp = tempfile::tempdir()?;
    let start = Instant::now();
    let reader = hako_image::unpack::decompressor(buffered, kind)?;
    let stats = hako_image::unpack::unpack(reader, tmp.path())?;
    let secs = start.elapsed().as_secs_f64();
    let mb = stats.bytes as f64 / 1e6;
    println!(
        "{} entries, {:.1} MB of content in {:.3} s: {:.0} MB/s",
        stats.entries,
        mb,
        secs,
        mb / secs
    );
    Ok(())
}
