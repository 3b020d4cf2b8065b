//! The image verbs: pull, push, images, inspect, tag, rmi, prune, save,
//! load, import, login, logout, system df.

use crate::Ctx;
use crate::config::Config;
use crate::format::{self, human_duration, human_size, now_secs};
use crate::progress::PullDisplay;
use anyhow::{Context, Result, bail};
use clap::Args;
use hako_image::archive::{self, ArchiveFormat, SaveItem};
use hako_image::auth::{AuthStore, Credentials};
use hako_image::pull::{PullOptions, pull as pull_image};
use hako_image::push::{PushEvent, PushOptions};
use hako_image::registry::{Client, RegistryConfig};
use hako_image::store::parse_rfc3339;
use hako_image::{Image, Platform, Reference, Store};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

fn store(ctx: &Ctx) -> Result<Store> {
    Store::open(&ctx.root)
        .with_context(|| format!("open the image store at {}", ctx.root.display()))
}

fn client() -> Result<Client> {
    let cfg = Config::load()?;
    Ok(Client::new(RegistryConfig {
        insecure: cfg.registries.insecure,
        mirrors: cfg.registries.mirrors,
        auth: AuthStore::from_env(),
        user_agent: Some(format!("hako/{}", env!("CARGO_PKG_VERSION"))),
        certs_dir: Some(
            cfg.registries
                .certs_dir
                .unwrap_or_else(|| PathBuf::from("/etc/hako/certs.d")),
        ),
    }))
}

fn parse_ref(s: &str) -> Result<Reference> {
    Ok(s.parse::<Reference>()?)
}

/// `busybox:latest` as Docker prints a tag.
fn familiar_tag(r: &Reference) -> String {
    format!(
        "{}:{}",
        r.familiar_name(),
        r.tag.as_deref().unwrap_or("latest")
    )
}

/// `busybox@sha256:...` as Docker prints a repo digest.
fn familiar_digest(repo_digest: &str) -> String {
    match repo_digest.split_once('@') {
        Some((name, d)) => match format!("{name}:x").parse::<Reference>() {
            Ok(r) => format!("{}@{d}", r.familiar_name()),
            Err(_) => repo_digest.to_string(),
        },
        None => repo_digest.to_string(),
    }
}

#[derive(Args)]
pub struct PullArgs {
    /// Print only the image's name.
    #[arg(short, long)]
    quiet: bool,
    /// The platform to pull from a multi-platform image (os/arch[/variant]).
    #[arg(long)]
    platform: Option<String>,
    image: String,
}

/// The pull of `run`/`create`: progress lines on stderr, as Docker's.
pub fn pull_quiet(ctx: &Ctx, image: &str, platform: Option<&str>) -> Result<()> {
    let r = parse_ref(image)?;
    let platform = platform.map(Platform::parse).transpose()?;
    let store = store(ctx)?;
    let client = client()?;
    eprintln!("Pulling {}", familiar_tag(&r));
    let opts = PullOptions {
        platform,
        ..PullOptions::default()
    };
    let pulled = pull_image(&store, &client, &r, &opts, &hako_image::pull::NoProgress)?;
    eprintln!("Digest: {}", pulled.digest);
    Ok(())
}

pub fn pull(ctx: &Ctx, a: PullArgs) -> Result<i32> {
    let r = parse_ref(&a.image)?;
    let platform = a.platform.as_deref().map(Platform::parse).transpose()?;
    let store = store(ctx)?;
    let client = client()?;
    let quiet = a.quiet;
    if !quiet {
        if !a.image.contains(':') && !a.image.contains('@') {
            println!("Using default tag: latest");
        }
        let what = match (&r.tag, &r.digest) {
            (_, Some(d)) => d.to_string(),
            (Some(t), None) => t.clone(),
            (None, None) => "latest".into(),
        };
        // As Docker: the repository's path, without its registry.
        println!("{what}: Pulling from {}", r.repository);
    }
    let display = PullDisplay::new(quiet, std::io::stdout().is_terminal());
    let opts = PullOptions {
        platform,
        ..PullOptions::default()
    };
    let res = pull_image(&store, &client, &r, &opts, &display);
    display.finish();
    let pulled = res?;
    if quiet {
        println!("{r}");
        return Ok(0);
    }
    println!("Digest: {}", pulled.digest);
    let shown = if r.digest.is_some() {
        format!("{}@{}", r.familiar_name(), pulled.digest)
    } else {
        familiar_tag(&r)
    };
    if pulled.downloaded {
        println!("Status: Downloaded newer image for {shown}");
    } else {
        println!("Status: Image is up to date for {shown}");
    }
    println!("{r}");
    Ok(0)
}

#[derive(Args)]
pub struct PushArgs {
    #[arg(short, long)]
    quiet: bool,
    /// Upload layers in chunks of this many bytes.
    #[arg(long, value_name = "BYTES")]
    chunk_size: Option<u64>,
    /// The image to push.
    image: String,
    /// Where to push it (default: the image's own name).
    destination: Option<String>,
}

pub fn push(ctx: &Ctx, a: PushArgs) -> Result<i32> {
    let store = store(ctx)?;
    let image = store.resolve(&a.image)?;
    let target = match &a.destination {
        Some(d) => parse_ref(d)?,
        None => parse_ref(&a.image)?,
    };
    let client = client()?;
    if !a.quiet {
        println!("The push refers to repository [{}]", target.name());
    }
    let quiet = a.quiet;
    let progress = |e: PushEvent| {
        if quiet {
            return;
        }
        match e {
            PushEvent::Preparing { .. } => {}
            PushEvent::Exists { digest } => println!("{}: Layer already exists", digest.short()),
            PushEvent::Mounted { digest, from } => {
                println!("{}: Mounted from {from}", digest.short())
            }
            PushEvent::Pushed { digest, .. } => println!("{}: Pushed", digest.short()),
        }
    };
    let pushed = hako_image::push::push(
        &store,
        &client,
        &image,
        &target,
        &PushOptions {
            chunk_size: a.chunk_size,
        },
        &progress,
    )?;
    let tag = target.tag.clone().unwrap_or_else(|| "latest".into());
    if quiet {
        println!("{}@{}", target.name(), pushed.digest);
    } else {
        println!("{tag}: digest: {} size: {}", pushed.digest, pushed.size);
    }
    Ok(0)
}

#[derive(Args)]
pub struct ImagesArgs {
    /// Show all images (there are no hidden intermediate images; accepted for Docker's sake).
    #[arg(short, long)]
    all: bool,
    /// Only show image ids.
    #[arg(short, long)]
    quiet: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Do not truncate ids.
    #[arg(long)]
    no_trunc: bool,
    /// Output with a Go template, `table TEMPLATE`, or `json`.
    #[arg(long)]
    format: Option<String>,
    /// Only images of this repository (and tag).
    reference: Option<String>,
}

fn created_secs(img: &Image) -> Option<i64> {
    img.config.created.as_deref().and_then(parse_rfc3339)
}

/// The rows `images` prints: one per tag, or one `<none>` row.
fn image_rows(store: &Store, a: &ImagesArgs) -> Result<Vec<Value>> {
    let filter = a.reference.as_deref().map(parse_ref).transpose()?;
    let explicit_tag = a
        .reference
        .as_deref()
        .is_some_and(|r| r.rsplit('/').next().is_some_and(|l| l.contains(':')));
    let mut rows = Vec::new();
    let now = now_secs();
    for img in store.images()? {
        let size = store.image_size(&img);
        let id = if a.no_trunc {
            img.id.to_string()
        } else {
            img.id.short().to_string()
        };
        let created = created_secs(&img);
        let mut names: Vec<(String, String, Option<Reference>)> = img
            .tags
            .iter()
            .map(|t| {
                (
                    t.familiar_name(),
                    t.tag.clone().unwrap_or_default(),
                    Some(t.clone()),
                )
            })
            .collect();
        if names.is_empty() {
            names.push(("<none>".into(), "<none>".into(), None));
        }
        for (repo, tag, r) in names {
            if let Some(f) = &filter {
                let Some(r) = &r else { continue };
                if r.name() != f.name() || (explicit_tag && r.tag != f.tag) {
                    continue;
                }
            }
            let digest = img
                .record
                .repo_digests
                .iter()
                .find(|rd| {
                    r.as_ref()
                        .is_some_and(|r| rd.starts_with(&format!("{}@", r.name())))
                })
                .or(img.record.repo_digests.first())
                .and_then(|rd| rd.split_once('@').map(|(_, d)| d.to_string()))
                .unwrap_or_else(|| "<none>".into());
            rows.push(json!({
                "Containers": "N/A",
                "CreatedAt": img.config.created.clone().unwrap_or_default(),
                "CreatedSince": created.map_or("N/A".to_string(), |c| format!("{} ago", human_duration(now - c))),
                "Digest": digest,
                "ID": id,
                "Repository": repo,
                "SharedSize": "N/A",
                "Size": human_size(size),
                "Tag": tag,
                "UniqueSize": "N/A",
                "VirtualSize": human_size(size),
            }));
        }
    }
    Ok(rows)
}

fn image_column(field: &str) -> String {
    match field {
        "ID" => "IMAGE ID".into(),
        "CreatedSince" => "CREATED".into(),
        "CreatedAt" => "CREATED AT".into(),
        "Repository" => "REPOSITORY".into(),
        other => other.to_uppercase(),
    }
}

pub fn list(ctx: &Ctx, a: ImagesArgs) -> Result<i32> {
    let _ = a.all;
    let store = store(ctx)?;
    let rows = image_rows(&store, &a)?;
    if a.quiet {
        let mut seen = BTreeSet::new();
        for r in &rows {
            let id = r["ID"].as_str().unwrap_or_default().to_string();
            if seen.insert(id.clone()) {
                println!("{id}");
            }
        }
        return Ok(0);
    }
    let default = if a.digests {
        "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    };
    format::print_rows(&rows, a.format.as_deref(), default, &image_column)?;
    Ok(0)
}

#[derive(Args)]
pub struct InspectArgs {
    /// Output with a Go template.
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    images: Vec<String>,
}

/// An image as `docker image inspect` shows it.
fn inspect_json(store: &Store, img: &Image) -> Value {
    let c = &img.config;
    json!({
        "Id": img.id.to_string(),
        "RepoTags": img.tags.iter().map(familiar_tag).collect::<Vec<_>>(),
        "RepoDigests": img.record.repo_digests.iter().map(|d| familiar_digest(d)).collect::<Vec<_>>(),
        "Parent": "",
        "Comment": c.other.get("comment").cloned().unwrap_or(Value::String(String::new())),
        "Created": c.created.clone().unwrap_or_default(),
        "DockerVersion": c.other.get("docker_version").cloned().unwrap_or(Value::String(String::new())),
        "Author": c.author.clone().unwrap_or_default(),
        "Config": c.config.clone().unwrap_or(Value::Null),
        "Architecture": c.architecture,
        "Variant": c.variant,
        "Os": c.os,
        "Size": store.image_size(img),
        "GraphDriver": {
            "Name": "overlay",
            "Data": {
                "LowerDir": img.chain_ids().iter().rev().map(|l| store.layer_dir(l).join("diff").display().to_string()).collect::<Vec<_>>().join(":"),
            }
        },
        "RootFS": {
            "Type": "layers",
            "Layers": c.rootfs.diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        },
        "Metadata": {"LastTagTime": img.record.added},
        "Descriptor": {
            "mediaType": img.record.manifest_media_type,
            "digest": img.record.manifest.to_string(),
        },
    })
}

/// `inspect`: containers first (as Docker looks them up), then images.
pub fn inspect_any(ctx: &Ctx, a: InspectArgs) -> Result<i32> {
    inspect_names(ctx, a, true)
}

pub fn inspect(ctx: &Ctx, a: InspectArgs) -> Result<i32> {
    inspect_names(ctx, a, false)
}

fn inspect_names(ctx: &Ctx, a: InspectArgs, containers: bool) -> Result<i32> {
    let store = store(ctx)?;
    let mut out = Vec::new();
    let mut code = 0;
    for name in &a.images {
        if containers && let Some(v) = crate::containers::inspect_container(ctx, name)? {
            out.push(v);
            continue;
        }
        match store.resolve(name) {
            Ok(img) => out.push(inspect_json(&store, &img)),
            // `docker inspect` looks for volumes after images.
            Err(_) if containers && let Some(v) = crate::volumes::inspect_volume(ctx, name)? => {
                out.push(v);
            }
            Err(_) if containers && let Some(v) = crate::networks::inspect_network(ctx, name)? => {
                out.push(v);
            }
            Err(e) => {
                eprintln!("Error: {e}");
                code = 1;
            }
        }
    }
    match &a.format {
        Some(f) => {
            let t = format::Template::parse(f)?;
            for v in &out {
                println!("{}", t.render(v)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&out)?),
    }
    Ok(code)
}

#[derive(Args)]
pub struct TagArgs {
    source: String,
    target: String,
}

pub fn tag(ctx: &Ctx, a: TagArgs) -> Result<i32> {
    let store = store(ctx)?;
    let img = store.resolve(&a.source)?;
    let target = parse_ref(&a.target)?;
    if target.digest.is_some() {
        bail!(
            "tag {}: a tag cannot name a digest; give name:tag",
            a.target
        );
    }
    store.tag(&img.id, &target)?;
    Ok(0)
}

#[derive(Args)]
pub struct RmiArgs {
    /// Remove the image even when several names point at it.
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    images: Vec<String>,
}

/// Snapshots (containers) that use each image, by image id hex.
fn images_in_use(store: &Store) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for name in store.snapshots()? {
        if let Ok(s) = store.snapshot(&name)
            && let Some(id) = s.record.image
        {
            out.insert(id.hex().to_string());
        }
    }
    Ok(out)
}

pub fn rmi(ctx: &Ctx, a: RmiArgs) -> Result<i32> {
    let store = store(ctx)?;
    let mut code = 0;
    let mut deleted_any = false;
    for name in &a.images {
        match rmi_one(&store, name, a.force) {
            Ok(deleted) => deleted_any |= deleted,
            Err(e) => {
                eprintln!("Error: {}", crate::error_text(&e));
                code = 1;
            }
        }
    }
    if deleted_any {
        store.collect_garbage()?;
    }
    Ok(code)
}

/// Removes one name, or the whole image when it was the last name (or
/// `force`). Returns whether an image was deleted.
fn rmi_one(store: &Store, name: &str, force: bool) -> Result<bool> {
    let img = store.resolve(name)?;
    let by_tag = name.parse::<Reference>().ok().filter(|r| {
        img.tags.contains(r)
            || img
                .tags
                .contains(&r.with_tag(r.tag.as_deref().unwrap_or("latest")))
    });
    if let Some(r) = &by_tag
        && img.tags.len() > 1
    {
        store.untag(r)?;
        println!("Untagged: {}", familiar_tag(r));
        return Ok(false);
    }
    if by_tag.is_none() && img.tags.len() > 1 && !force {
        bail!(
            "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
            img.id.short()
        );
    }
    if images_in_use(store)?.contains(img.id.hex()) {
        bail!(
            "conflict: unable to delete {} - image is being used by a container; remove the container first",
            img.id.short()
        );
    }
    for t in store.remove_image(&img.id)? {
        println!("Untagged: {}", familiar_tag(&t));
    }
    for d in &img.record.repo_digests {
        println!("Untagged: {}", familiar_digest(d));
    }
    println!("Deleted: {}", img.id);
    Ok(true)
}

#[derive(Args)]
pub struct PruneArgs {
    /// Remove all images no container uses, not just untagged ones.
    #[arg(short, long)]
    all: bool,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    force: bool,
}

fn confirm(question: &str) -> Result<bool> {
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "Yes"))
}

pub fn prune(ctx: &Ctx, a: PruneArgs) -> Result<i32> {
    let store = store(ctx)?;
    if !a.force {
        let warning = if a.all {
            "WARNING! This will remove all images without at least one container associated to them."
        } else {
            "WARNING! This will remove all dangling images."
        };
        println!("{warning}");
        if !confirm("Are you sure you want to continue?")? {
            return Ok(0);
        }
    }
    let used = images_in_use(&store)?;
    let mut lines = Vec::new();
    for img in store.images()? {
        if used.contains(img.id.hex()) || (!a.all && !img.tags.is_empty()) {
            continue;
        }
        for t in store.remove_image(&img.id)? {
            lines.push(format!("untagged: {}", familiar_tag(&t)));
        }
        lines.push(format!("deleted: {}", img.id));
    }
    let collected = store.collect_garbage()?;
    if !lines.is_empty() {
        println!("Deleted Images:");
        for l in lines {
            println!("{l}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(collected.bytes));
    Ok(0)
}

#[derive(Args)]
pub struct SaveArgs {
    /// Write to this file instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// docker-archive (the default, as `docker save` writes) or oci-archive.
    #[arg(long, default_value = "docker-archive")]
    format: String,
    #[arg(required = true)]
    images: Vec<String>,
}

pub fn save(ctx: &Ctx, a: SaveArgs) -> Result<i32> {
    let store = store(ctx)?;
    let format: ArchiveFormat = a.format.parse()?;
    let mut items = Vec::new();
    for name in &a.images {
        let image = store.resolve(name)?;
        // Saved under the name given when it is a name; by id, all its tags.
        let names = match name.parse::<Reference>() {
            Ok(r) if image.tags.contains(&r) => vec![r],
            _ => image.tags.clone(),
        };
        items.push(SaveItem { image, names });
    }
    match &a.output {
        Some(path) => {
            // Written aside and renamed, so a failed save leaves no partial file.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let tmp = tempfile_in(dir)?;
            let res = (|| -> Result<()> {
                let f = std::fs::File::create(&tmp)
                    .with_context(|| format!("create {}", tmp.display()))?;
                archive::save(
                    &store,
                    &items,
                    format,
                    std::io::BufWriter::with_capacity(1 << 20, f),
                )?;
                std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))?;
                Ok(())
            })();
            if res.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            res?;
        }
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!(
                    "refusing to write an archive to a terminal: use -o FILE or redirect the output"
                );
            }
            archive::save(
                &store,
                &items,
                format,
                std::io::BufWriter::with_capacity(1 << 20, stdout.lock()),
            )?;
        }
    }
    Ok(0)
}

fn tempfile_in(dir: &std::path::Path) -> Result<PathBuf> {
    Ok(dir.join(format!(".hako-save-{}", std::process::id())))
}

#[derive(Args)]
pub struct LoadArgs {
    /// Read from this file instead of standard input.
    #[arg(short, long)]
    input: Option<PathBuf>,
    #[arg(short, long)]
    quiet: bool,
}

pub fn load(ctx: &Ctx, a: LoadArgs) -> Result<i32> {
    let store = store(ctx)?;
    let loaded = match &a.input {
        Some(p) => archive::load(&store, p)?,
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                bail!("no archive: give -i FILE or pipe one in");
            }
            archive::load_stream(&store, stdin.lock())?
        }
    };
    for (id, names) in &loaded.images {
        if names.is_empty() {
            println!("Loaded image ID: {id}");
        }
        for n in names {
            println!("Loaded image: {}", familiar_tag(n));
        }
    }
    Ok(0)
}

#[derive(Args)]
pub struct ImportArgs {
    /// A tarball of a root filesystem, or - for standard input.
    file: String,
    /// The name to give the image.
    reference: Option<String>,
    /// Set the image's command (CMD) as JSON or a shell string.
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    changes: Vec<String>,
}

/// `--change` instructions that `import` applies to the config
/// (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE).
pub(crate) fn apply_changes(changes: &[String]) -> Result<Option<Value>> {
    if changes.is_empty() {
        return Ok(None);
    }
    let mut cfg = serde_json::Map::new();
    let words = |v: &str| -> Value {
        serde_json::from_str::<Vec<String>>(v)
            .map_or_else(|_| json!(["/bin/sh", "-c", v]), |a| json!(a))
    };
    for c in changes {
        let (instr, value) = c
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or((c.trim(), ""));
        let value = value.trim();
        match instr.to_ascii_uppercase().as_str() {
            "CMD" => {
                cfg.insert("Cmd".into(), words(value));
            }
            "ENTRYPOINT" => {
                cfg.insert("Entrypoint".into(), words(value));
            }
            "ENV" => {
                let kv = value.replacen(' ', "=", usize::from(!value.contains('=')));
                let env = cfg.entry("Env").or_insert_with(|| json!([]));
                if let Some(a) = env.as_array_mut() {
                    a.push(json!(kv));
                }
            }
            "WORKDIR" => {
                cfg.insert("WorkingDir".into(), json!(value));
            }
            "USER" => {
                cfg.insert("User".into(), json!(value));
            }
            "LABEL" => {
                let (k, v) = value.split_once('=').unwrap_or((value, ""));
                let labels = cfg.entry("Labels").or_insert_with(|| json!({}));
                if let Some(o) = labels.as_object_mut() {
                    o.insert(k.trim_matches('"').into(), json!(v.trim_matches('"')));
                }
            }
            "EXPOSE" => {
                let ports = cfg.entry("ExposedPorts").or_insert_with(|| json!({}));
                if let Some(o) = ports.as_object_mut() {
                    let p = if value.contains('/') {
                        value.to_string()
                    } else {
                        format!("{value}/tcp")
                    };
                    o.insert(p, json!({}));
                }
            }
            other => bail!(
                "--change {other}: only CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL and EXPOSE can be changed"
            ),
        }
    }
    Ok(Some(Value::Object(cfg)))
}

pub fn import(ctx: &Ctx, a: ImportArgs) -> Result<i32> {
    let store = store(ctx)?;
    let names = a
        .reference
        .as_deref()
        .map(parse_ref)
        .transpose()?
        .into_iter()
        .collect::<Vec<_>>();
    let changes = apply_changes(&a.changes)?;
    let id = if a.file == "-" {
        archive::import(&store, std::io::stdin(), &names, changes)?
    } else {
        let f = std::fs::File::open(&a.file).with_context(|| format!("open {}", a.file))?;
        archive::import(&store, f, &names, changes)?
    };
    println!("{id}");
    Ok(0)
}

#[derive(Args)]
pub struct LoginArgs {
    #[arg(short, long)]
    username: Option<String>,
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
    /// The registry (default: docker.io).
    server: Option<String>,
}

/// The registry a login names: `https://host/` and Docker Hub's index URL
/// come down to the host.
fn registry_host(server: Option<&str>) -> String {
    hako_image::auth::normalize_registry(server.unwrap_or("docker.io"))
}

fn prompt(question: &str, echo: bool) -> Result<String> {
    use nix::sys::termios::{self, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    eprint!("{question}");
    std::io::stderr().flush()?;
    let saved = if echo {
        None
    } else {
        termios::tcgetattr(&stdin).ok()
    };
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &quiet)?;
    }
    let mut line = String::new();
    let res = stdin.lock().read_line(&mut line);
    if let Some(t) = &saved {
        let _ = termios::tcsetattr(&stdin, SetArg::TCSANOW, t);
        eprintln!();
    }
    res?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

pub fn login(_ctx: &Ctx, a: LoginArgs) -> Result<i32> {
    let host = registry_host(a.server.as_deref());
    let interactive = std::io::stdin().is_terminal();
    let username = match a.username {
        Some(u) => u,
        None if interactive && !a.password_stdin => prompt("Username: ", true)?,
        None => bail!("login {host}: give a user name with -u"),
    };
    let password = if a.password_stdin {
        let mut s = String::new();
        std::io::stdin().lock().read_line(&mut s)?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else {
        match a.password {
            Some(p) => {
                eprintln!(
                    "WARNING! Using --password via the CLI is insecure. Use --password-stdin."
                );
                p
            }
            None if interactive => prompt("Password: ", false)?,
            None => bail!("login {host}: give the password with --password-stdin"),
        }
    };
    if username.is_empty() || password.is_empty() {
        bail!("login {host}: the user name and password must not be empty");
    }
    let creds = Credentials { username, password };
    client()?
        .check_login(&host, &creds)
        .with_context(|| format!("login to {host} failed"))?;
    AuthStore::from_env().store(&host, &creds)?;
    println!("Login Succeeded");
    Ok(0)
}

#[derive(Args)]
pub struct LogoutArgs {
    server: Option<String>,
}

pub fn logout(_ctx: &Ctx, a: LogoutArgs) -> Result<i32> {
    let host = registry_host(a.server.as_deref());
    if AuthStore::from_env().remove(&host)? {
        println!("Removing login credentials for {host}");
    } else {
        println!("Not logged in to {host}");
    }
    Ok(0)
}

/// Bytes of file content under `dir`, symlinks not followed.
fn du(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

pub fn df(ctx: &Ctx, format: Option<&str>) -> Result<i32> {
    let mut engine = crate::containers::engine_as_is(ctx)?;
    let all_containers = engine.list()?;
    let volume_list = engine.volume_list()?;
    let users = engine.volume_users()?;
    let store = engine.store()?;
    let images = store.images()?;
    let used = images_in_use(store)?;
    // Layers shared by several images count once.
    let mut all_layers = BTreeSet::new();
    let mut used_layers = BTreeSet::new();
    for img in &images {
        for c in img.chain_ids() {
            if used.contains(img.id.hex()) {
                used_layers.insert(c.clone());
            }
            all_layers.insert(c);
        }
    }
    let size_of = |set: &BTreeSet<hako_image::Digest>| -> u64 {
        set.iter()
            .filter_map(|c| store.layer_record(c))
            .map(|r| r.size)
            .sum()
    };
    let total = size_of(&all_layers);
    let reclaimable = total - size_of(&used_layers).min(total);
    let pct = |part: u64, whole: u64| (part * 100).checked_div(whole).unwrap_or(0);
    // A container's size is its own changes; a running one's cannot be
    // reclaimed. (`--rootfs` containers have no snapshot.)
    let mut containers = (all_containers.len(), 0usize, 0u64, 0u64);
    for c in &all_containers {
        let running = matches!(
            c.status,
            hako_engine::Status::Running | hako_engine::Status::Paused
        );
        let size = store
            .snapshot(&c.id)
            .map(|s| du(&s.upper_dir()))
            .unwrap_or(0);
        containers.2 += size;
        if running {
            containers.1 += 1;
        } else {
            containers.3 += size;
        }
    }
    // A volume some container (in any state) names is in use, as Docker
    // counts it.
    let mut volumes = (volume_list.len(), 0usize, 0u64, 0u64);
    for v in &volume_list {
        let size = du(&v.mountpoint);
        volumes.2 += size;
        if users.get(&v.name).is_some_and(|u| !u.is_empty()) {
            volumes.1 += 1;
        } else {
            volumes.3 += size;
        }
    }
    let rows = vec![
        json!({"Type": "Images", "TotalCount": images.len().to_string(), "Active": used.len().to_string(),
               "Size": human_size(total), "Reclaimable": format!("{} ({}%)", human_size(reclaimable), pct(reclaimable, total))}),
        json!({"Type": "Containers", "TotalCount": containers.0.to_string(), "Active": containers.1.to_string(),
               "Size": human_size(containers.2), "Reclaimable": format!("{} ({}%)", human_size(containers.3), pct(containers.3, containers.2))}),
        json!({"Type": "Local Volumes", "TotalCount": volumes.0.to_string(), "Active": volumes.1.to_string(),
               "Size": human_size(volumes.2), "Reclaimable": format!("{} ({}%)", human_size(volumes.3), pct(volumes.3, volumes.2))}),
        json!({"Type": "Build Cache", "TotalCount": "0", "Active": "0", "Size": "0B", "Reclaimable": "0B"}),
    ];
    let column = |f: &str| match f {
        "TotalCount" => "TOTAL".to_string(),
        other => other.to_uppercase(),
    };
    format::print_rows(
        &rows,
        format,
        "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
        &column,
    )?;
    Ok(0)
}
