//! Progress bars for long operations — layers built, layer bytes tarred,
//! hashed and compressed, blob bytes pushed — drawn on stderr only when it is a terminal and
//! `--quiet` is not given, so CI logs and pipes stay clean.

use std::io::IsTerminal;
use std::sync::Arc;

use berth_builder::image::BuildProgress;
use berth_oci::client::{PushEvent, PushProgress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Bars for one build.
pub(crate) struct BuildBars {
    layers: ProgressBar,
    bytes: ProgressBar,
}

impl BuildBars {
    /// Bars on stderr, or `None` when stderr is not a terminal or the user
    /// asked for quiet.
    pub(crate) fn new(quiet: bool) -> Option<Arc<Self>> {
        if quiet || !std::io::stderr().is_terminal() {
            return None;
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let layers = multi.add(ProgressBar::new(0));
        layers.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} layers")
                .expect("static template")
                .progress_chars("=> "),
        );
        layers.set_prefix("build");
        let bytes = multi.add(ProgressBar::new(0));
        bytes.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {bytes}/{total_bytes} tarred, hashed, compressed ({bytes_per_sec})")
                .expect("static template")
                .progress_chars("=> "),
        );
        bytes.set_prefix("bytes");
        Some(Arc::new(Self { layers, bytes }))
    }

    /// Remove the bars once the build is over.
    pub(crate) fn finish(&self) {
        self.layers.finish_and_clear();
        self.bytes.finish_and_clear();
    }
}

impl BuildProgress for BuildBars {
    fn planned(&self, layers: usize, bytes: u64) {
        self.layers.inc_length(layers as u64);
        // NAR size is the estimate; tar adds headers, so the bar may end a
        // little past it.
        self.bytes.inc_length(bytes);
    }

    fn tarred(&self, bytes: u64) {
        self.bytes.inc(bytes);
    }

    fn layer_done(&self) {
        self.layers.inc(1);
    }
}

/// A bar for pushes: bytes of the images' blobs sent or found already
/// present.
pub(crate) struct PushBar {
    bar: ProgressBar,
}

impl PushBar {
    /// A bar on stderr, or `None` when stderr is not a terminal or the user
    /// asked for quiet.
    pub(crate) fn new(quiet: bool) -> Option<Arc<Self>> {
        if quiet || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, present blobs count as done)")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix("push");
        Some(Arc::new(Self { bar }))
    }

    /// The hook the registry client calls.
    pub(crate) fn hook(self: &Arc<Self>) -> PushProgress {
        let me = self.clone();
        PushProgress(Arc::new(move |event| match event {
            PushEvent::Planned(n) => me.bar.inc_length(n),
            PushEvent::Sent(n) | PushEvent::Skipped(n) => me.bar.inc(n),
        }))
    }

    /// Remove the bar.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
