//! Pull progress: Docker's per-layer bars on a terminal, one line per
//! step otherwise.

use hako_image::pull::{LayerState, Progress, PullEvent};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Mutex;

pub struct PullDisplay {
    quiet: bool,
    bars: Option<MultiProgress>,
    layers: Mutex<Vec<Layer>>,
}

struct Layer {
    short: String,
    bar: Option<ProgressBar>,
    last: Option<&'static str>,
    downloaded: bool,
}

impl PullDisplay {
    pub fn new(quiet: bool, terminal: bool) -> PullDisplay {
        PullDisplay {
            quiet,
            bars: (terminal && !quiet)
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout())),
            layers: Mutex::new(Vec::new()),
        }
    }

    /// Leaves the bars on screen as their final lines.
    pub fn finish(&self) {
        if let Ok(layers) = self.layers.lock() {
            for l in layers.iter() {
                if let Some(b) = &l.bar
                    && !b.is_finished()
                {
                    b.abandon();
                }
            }
        }
    }

    /// A bar with `status` on a terminal; one line when the status
    /// changes otherwise.
    fn progress(&self, l: &mut Layer, status: &'static str, done: u64, total: u64) {
        let changed = l.last != Some(status);
        l.last = Some(status);
        match &l.bar {
            Some(b) => {
                if changed {
                    b.set_style(
                        ProgressStyle::with_template(&format!(
                            "{{prefix}}: {status} [{{bar:50}}] {{bytes}}/{{total_bytes}}"
                        ))
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                }
                b.set_length(total);
                b.set_position(done);
            }
            None if changed => println!("{}: {status}", l.short),
            None => {}
        }
    }

    fn line(&self, l: &mut Layer, status: &'static str) {
        if l.last == Some(status) {
            return;
        }
        l.last = Some(status);
        match &l.bar {
            Some(b) => {
                b.set_style(
                    ProgressStyle::with_template("{prefix}: {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b.finish_with_message(status);
            }
            None => println!("{}: {status}", l.short),
        }
    }
}

impl Progress for PullDisplay {
    fn event(&self, event: PullEvent) {
        if self.quiet {
            return;
        }
        let Ok(mut layers) = self.layers.lock() else {
            return;
        };
        match event {
            PullEvent::Resolved { layers: descs, .. } => {
                for d in descs {
                    let short = d.digest.short().to_string();
                    let bar = self.bars.as_ref().map(|m| {
                        let b = m.add(ProgressBar::new(d.size));
                        b.set_prefix(short.clone());
                        b.set_style(
                            ProgressStyle::with_template("{prefix}: {msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_bar()),
                        );
                        b.set_message("Pulling fs layer");
                        b
                    });
                    if bar.is_none() {
                        println!("{short}: Pulling fs layer");
                    }
                    layers.push(Layer {
                        short,
                        bar,
                        last: Some("Pulling fs layer"),
                        downloaded: false,
                    });
                }
            }
            PullEvent::Layer { index, state } => {
                let Some(l) = layers.get_mut(index) else {
                    return;
                };
                match state {
                    LayerState::AlreadyExists => self.line(l, "Already exists"),
                    LayerState::Waiting => self.line(l, "Waiting"),
                    LayerState::Complete => self.line(l, "Pull complete"),
                    LayerState::Downloading { done, total } => {
                        self.progress(l, "Downloading", done, total);
                        if done == total && !l.downloaded {
                            l.downloaded = true;
                            if l.bar.is_none() {
                                println!("{}: Download complete", l.short);
                            }
                        }
                    }
                    // Extraction runs just behind the download; it gets the
                    // layer's line once the download is done, as in Docker.
                    LayerState::Extracting { done, total } if l.downloaded => {
                        self.progress(l, "Extracting", done, total);
                    }
                    LayerState::Extracting { .. } => {}
                }
            }
        }
    }
}
