//! The file verbs: `cp`, `diff`, `export` and `commit`, with Docker's
//! arguments and output.

use crate::Ctx;
use crate::containers::engine;
use anyhow::{Context, Result, bail};
use clap::Args;
use hako_engine::files::{CommitOptions, CopyEnd, CopyOptions};
use std::io::Write;
use std::path::Path;

#[derive(Args)]
pub struct CpArgs {
    /// Keep the uid and gid of the source.
    #[arg(short, long)]
    archive: bool,
    /// Follow a symlink named as the source.
    #[arg(short = 'L', long = "follow-link")]
    follow_link: bool,
    /// CONTAINER:SRC, a host path, or - for a tar on standard input.
    src: String,
    /// CONTAINER:DEST, a host path, or - for a tar on standard output.
    dest: String,
}

/// `CONTAINER:PATH` or a host path, as Docker tells them apart: a path
/// that starts with `/` or `.` is the host's even with a `:` in it.
fn split_cp_arg(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    arg.split_once(':').filter(|(c, _)| !c.is_empty())
}

pub fn cp(ctx: &Ctx, a: CpArgs) -> Result<i32> {
    let opts = CopyOptions {
        archive: a.archive,
        follow_link: a.follow_link,
    };
    let mut e = engine(ctx)?;
    match (split_cp_arg(&a.src), split_cp_arg(&a.dest)) {
        (Some(_), Some(_)) => bail!("copying between containers is not supported"),
        (None, None) => bail!("one of the paths must be CONTAINER:PATH"),
        (Some((c, path)), None) if a.dest == "-" => {
            let mut out = std::io::stdout().lock();
            e.copy_out(c, path, opts, &mut out)?;
            out.flush().context("write the tar")?;
        }
        (None, Some((c, path))) if a.src == "-" => {
            e.copy_in(c, path, opts, std::io::stdin().lock())?;
        }
        (Some((container, path)), None) => {
            e.copy(
                CopyEnd::Container { container, path },
                CopyEnd::Host(Path::new(&a.dest)),
                opts,
            )?;
        }
        (None, Some((container, path))) => {
            e.copy(
                CopyEnd::Host(Path::new(&a.src)),
                CopyEnd::Container { container, path },
                opts,
            )?;
        }
    }
    Ok(0)
}

#[derive(Args)]
pub struct DiffArgs {
    container: String,
}

pub fn diff(ctx: &Ctx, a: DiffArgs) -> Result<i32> {
    let mut e = engine(ctx)?;
    let mut out = std::io::stdout().lock();
    for c in e.diff(&a.container)? {
        writeln!(out, "{} {}", c.kind, c.path)?;
    }
    Ok(0)
}

#[derive(Args)]
pub struct ExportArgs {
    /// Write to a file instead of standard output.
    #[arg(short, long)]
    output: Option<String>,
    container: String,
}

pub fn export(ctx: &Ctx, a: ExportArgs) -> Result<i32> {
    let mut e = engine(ctx)?;
    match a.output.as_deref().filter(|o| *o != "-") {
        Some(path) => {
            // Written aside and renamed in: no half archive under its name.
            let tmp = format!("{path}.hako-tmp-{}", std::process::id());
            let res = (|| -> Result<()> {
                let f = std::fs::File::create(&tmp).with_context(|| format!("create {tmp}"))?;
                let mut w = std::io::BufWriter::new(f);
                e.export(&a.container, &mut w)?;
                let f = w.into_inner().map_err(|e| e.into_error())?;
                f.sync_all().with_context(|| format!("write {tmp}"))?;
                std::fs::rename(&tmp, path).with_context(|| format!("rename {tmp} to {path}"))
            })();
            if res.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            res?;
        }
        None => {
            let stdout = std::io::stdout();
            if std::io::IsTerminal::is_terminal(&stdout) {
                bail!("refusing to write a tar to a terminal: use -o FILE or redirect the output");
            }
            let mut out = std::io::BufWriter::new(stdout.lock());
            e.export(&a.container, &mut out)?;
            out.flush().context("write the tar")?;
        }
    }
    Ok(0)
}

#[derive(Args)]
pub struct CommitArgs {
    /// Commit message.
    #[arg(short, long)]
    message: Option<String>,
    /// Author (e.g. "Jane <jane@example.com>").
    #[arg(short, long)]
    author: Option<String>,
    /// Apply a Dockerfile instruction: CMD, ENTRYPOINT, ENV, WORKDIR, USER,
    /// LABEL or EXPOSE.
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    change: Vec<String>,
    /// Pause the container while committing (--pause=false to not).
    #[arg(
        short,
        long,
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pause: bool,
    container: String,
    /// REPOSITORY[:TAG] for the new image.
    reference: Option<String>,
}

pub fn commit(ctx: &Ctx, a: CommitArgs) -> Result<i32> {
    let names = a
        .reference
        .as_deref()
        .map(|r| r.parse::<hako_image::Reference>())
        .transpose()
        .context("the image name")?
        .into_iter()
        .collect();
    let opts = CommitOptions {
        message: a.message,
        author: a.author,
        changes: crate::images::apply_changes(&a.change)?,
        pause: a.pause,
        names,
    };
    let mut e = engine(ctx)?;
    let id = e.commit(&a.container, opts)?;
    println!("{id}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp_args() {
        assert_eq!(split_cp_arg("web:/etc"), Some(("web", "/etc")));
        assert_eq!(split_cp_arg("./a:b"), None);
        assert_eq!(split_cp_arg("/tmp/a:b"), None);
        assert_eq!(split_cp_arg("-"), None);
        assert_eq!(split_cp_arg("file"), None);
    }
}
