//! Progress bars for long operations — layers built and layer bytes tarred,
//! hashed and compressed — drawn on stderr only when it is a terminal and
//! `--quiet` is not given, so CI logs and pipes stay clean.

use std::io::IsTerminal;
use std::sync::Arc;

use berth_builder::image::BuildProgress;
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
