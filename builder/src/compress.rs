//! Pinned, parallel, reproducible layer compression.
//!
//! A layer's tar stream is cut into fixed-size blocks by offset, and each
//! block is compressed on its own — gzip as raw deflate ending in a sync
//! flush (pigz's construction), closed by one empty final block and the gzip
//! trailer; zstd as one frame per block — so the output depends only on the
//! input, the implementation, its version, the level and the block size,
//! never on how many threads did the work. Those four form the
//! [`Compression::id`] that is recorded in each layer's annotations. The
//! gzip header has no MTIME and no FNAME.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc;

/// zlib-rs, the deflate implementation (pinned by Cargo.lock; a test keeps
/// this constant in step with it).
pub const ZLIB_RS_VERSION: &str = "0.6.8";
/// libzstd, through zstd-sys (same).
pub const ZSTD_VERSION: &str = "1.5.7";
/// Uncompressed bytes per gzip block.
pub const GZIP_BLOCK: usize = 1 << 20;
/// Uncompressed bytes per zstd frame.
pub const ZSTD_BLOCK: usize = 4 << 20;

/// How a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip (deflate) at a level from 1 to 9.
    Gzip {
        /// Compression level.
        level: u32,
    },
    /// zstd at a level from 1 to 19.
    Zstd {
        /// Compression level.
        level: i32,
    },
    /// No compression: the layer is the tar itself.
    None,
}

/// The default gzip level. Level 4 is zlib's first "medium" level: on a
/// 1.6 GiB closure it compresses 1.4× faster than level 6 (zlib's and Go's
/// default) for layers 1.7% larger (docs/benchmarks.md), and a build
/// compresses every changed layer while a registry stores it once.
pub const DEFAULT_GZIP_LEVEL: u32 = 4;

impl Default for Compression {
    fn default() -> Self {
        Self::Gzip {
            level: DEFAULT_GZIP_LEVEL,
        }
    }
}

impl Compression {
    /// Parse `gzip` (level [`DEFAULT_GZIP_LEVEL`]), `gzip:9`, `zstd`, `zstd:3`, `none`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (s, None),
        };
        let bad = || format!("compression {s:?} is not gzip[:1-9], zstd[:1-19] or none");
        match (name, level) {
            ("gzip", None) => Ok(Self::default()),
            ("gzip", Some(l)) => match l.parse() {
                Ok(level @ 1..=9) => Ok(Self::Gzip { level }),
                _ => Err(bad()),
            },
            ("zstd", None) => Ok(Self::Zstd { level: 3 }),
            ("zstd", Some(l)) => match l.parse() {
                Ok(level @ 1..=19) => Ok(Self::Zstd { level }),
                _ => Err(bad()),
            },
            ("none", None) => Ok(Self::None),
            _ => Err(bad()),
        }
    }

    /// The compressor id: everything that decides the output bytes.
    pub fn id(&self) -> String {
        match self {
            Self::Gzip { level } => {
                format!("gzip;impl=zlib-rs-{ZLIB_RS_VERSION};level={level};block={GZIP_BLOCK}")
            }
            Self::Zstd { level } => {
                format!("zstd;impl=libzstd-{ZSTD_VERSION};level={level};block={ZSTD_BLOCK}")
            }
            Self::None => "none".to_owned(),
        }
    }

    /// The OCI layer media type.
    pub fn media_type(&self) -> &'static str {
        match self {
            Self::Gzip { .. } => berth_oci::media_type::OCI_LAYER_GZIP,
            Self::Zstd { .. } => berth_oci::media_type::OCI_LAYER_ZSTD,
            Self::None => berth_oci::media_type::OCI_LAYER_TAR,
        }
    }

    fn block_size(&self) -> usize {
        match self {
            Self::Gzip { .. } => GZIP_BLOCK,
            Self::Zstd { .. } => ZSTD_BLOCK,
            Self::None => GZIP_BLOCK,
        }
    }

    /// Compress one block; the result can be followed by further blocks.
    fn block(&self, data: &[u8]) -> io::Result<Vec<u8>> {
        match *self {
            Self::Gzip { level } => {
                use flate2::{Compress, FlushCompress};
                let mut c = Compress::new(flate2::Compression::new(level), false);
                let mut out = Vec::with_capacity(data.len() / 2 + 64);
                loop {
                    let consumed = c.total_in() as usize;
                    if out.capacity() - out.len() < 64 {
                        out.reserve(data.len() / 4 + 64);
                    }
                    c.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
                        .map_err(io::Error::other)?;
                    // Done when all input is taken and the flush fitted.
                    if c.total_in() as usize == data.len() && out.len() < out.capacity() {
                        return Ok(out);
                    }
                }
            }
            Self::Zstd { level } => zstd::bulk::compress(data, level),
            Self::None => Ok(data.to_vec()),
        }
    }

    fn header(&self) -> &'static [u8] {
        match self {
            // Magic, deflate, no flags, MTIME 0, no extra flags, OS unknown.
            Self::Gzip { .. } => &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff],
            _ => &[],
        }
    }
}

type Job = (u64, Vec<u8>);
type Done = (u64, io::Result<Vec<u8>>);

/// A writer that compresses what it is given into `sink`, in blocks, on up
/// to `threads` threads.
pub struct BlockCompressor<W: Write> {
    sink: W,
    compression: Compression,
    block: Vec<u8>,
    crc: crc32fast::Hasher,
    len: u64,
    next_seq: u64,
    next_out: u64,
    ready: BTreeMap<u64, Vec<u8>>,
    workers: Option<Workers>,
    max_in_flight: u64,
    wrote_header: bool,
}

struct Workers {
    jobs: Option<mpsc::SyncSender<Job>>,
    done: mpsc::Receiver<Done>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl<W: Write> std::fmt::Debug for BlockCompressor<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockCompressor({})", self.compression.id())
    }
}

impl<W: Write> BlockCompressor<W> {
    /// Compress into `sink` with `threads` workers (1 compresses inline).
    pub fn new(sink: W, compression: Compression, threads: usize) -> Self {
        let threads = threads.max(1);
        let workers = (threads > 1 && compression != Compression::None).then(|| {
            let (job_tx, job_rx) = mpsc::sync_channel::<Job>(threads);
            let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
            let (done_tx, done) = mpsc::channel::<Done>();
            let handles = (0..threads)
                .map(|_| {
                    let (rx, tx) = (job_rx.clone(), done_tx.clone());
                    std::thread::spawn(move || {
                        loop {
                            let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            let Ok((seq, data)) = job else { return };
                            if tx.send((seq, compression.block(&data))).is_err() {
                                return;
                            }
                        }
                    })
                })
                .collect();
            Workers {
                jobs: Some(job_tx),
                done,
                handles,
            }
        });
        Self {
            sink,
            compression,
            block: Vec::with_capacity(compression.block_size()),
            crc: crc32fast::Hasher::new(),
            len: 0,
            next_seq: 0,
            next_out: 0,
            ready: BTreeMap::new(),
            workers,
            max_in_flight: 2 * threads as u64,
            wrote_header: false,
        }
    }

    fn emit_ready(&mut self) -> io::Result<()> {
        while let Some(data) = self.ready.remove(&self.next_out) {
            self.sink.write_all(&data)?;
            self.next_out += 1;
        }
        Ok(())
    }

    /// Wait for one finished block from the workers.
    fn collect_one(&mut self) -> io::Result<()> {
        let w = self.workers.as_ref().expect("only called with workers");
        let (seq, res) = w
            .done
            .recv()
            .map_err(|_| io::Error::other("a compression thread died"))?;
        self.ready.insert(seq, res?);
        self.emit_ready()
    }

    fn submit_block(&mut self) -> io::Result<()> {
        if !self.wrote_header {
            self.sink.write_all(self.compression.header())?;
            self.wrote_header = true;
        }
        if self.block.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(
            &mut self.block,
            Vec::with_capacity(self.compression.block_size()),
        );
        let seq = self.next_seq;
        self.next_seq += 1;
        match &self.workers {
            None => {
                let out = self.compression.block(&data)?;
                self.ready.insert(seq, out);
                self.emit_ready()
            }
            Some(w) => {
                let jobs = w.jobs.as_ref().expect("jobs open until finish");
                jobs.send((seq, data))
                    .map_err(|_| io::Error::other("compression threads stopped"))?;
                while self.next_seq - self.next_out > self.max_in_flight {
                    self.collect_one()?;
                }
                Ok(())
            }
        }
    }

    /// Flush the last block and the trailer; returns the sink, the
    /// uncompressed length and its CRC32.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.submit_block()?;
        if let Some(w) = self.workers.as_mut() {
            w.jobs = None;
        }
        while self.next_out < self.next_seq {
            self.collect_one()?;
        }
        if let Some(w) = self.workers.take() {
            for h in w.handles {
                let _ = h.join();
            }
        }
        if let Compression::Gzip { .. } = self.compression {
            // An empty final fixed-Huffman block, then CRC32 and ISIZE.
            self.sink.write_all(&[0x03, 0x00])?;
            let crc = std::mem::take(&mut self.crc).finalize();
            self.sink.write_all(&crc.to_le_bytes())?;
            self.sink.write_all(&(self.len as u32).to_le_bytes())?;
        }
        self.sink.flush()?;
        Ok((self.sink, self.len))
    }
}

impl<W: Write> Write for BlockCompressor<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let total = buf.len();
        self.crc.update(buf);
        self.len += total as u64;
        let size = self.compression.block_size();
        while !buf.is_empty() {
            let take = (size - self.block.len()).min(buf.len());
            self.block.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.block.len() == size {
                self.submit_block()?;
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer that hashes (sha256) and counts what passes through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: berth_oci::Hasher,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wrap `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: berth_oci::Algorithm::Sha256.hasher(),
            len: 0,
        }
    }

    /// The inner writer, the digest and the byte count.
    pub fn finish(self) -> (W, berth_oci::Digest, u64) {
        (self.inner, self.hasher.finish(), self.len)
    }

    /// The inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: text-like with a drifting pattern.
        (0..len)
            .map(|i| b"the quick brown fox jumps over the lazy dog "[(i * 7 + i / 1000) % 44])
            .collect()
    }

    fn compress(data: &[u8], c: Compression, threads: usize, chunk: usize) -> Vec<u8> {
        let mut w = BlockCompressor::new(Vec::new(), c, threads);
        for piece in data.chunks(chunk.max(1)) {
            w.write_all(piece).unwrap();
        }
        let (out, n) = w.finish().unwrap();
        assert_eq!(n, data.len() as u64);
        out
    }

    #[test]
    fn same_bytes_for_any_thread_count_and_write_pattern() {
        let data = sample(5 * GZIP_BLOCK + 12345);
        for c in [
            Compression::Gzip { level: 6 },
            Compression::Zstd { level: 3 },
            Compression::None,
        ] {
            let one = compress(&data, c, 1, 1 << 16);
            for (threads, chunk) in [(2, 1000), (3, 1 << 20), (8, 7)] {
                assert!(
                    compress(&data, c, threads, chunk) == one,
                    "{} with {threads} threads",
                    c.id()
                );
            }
        }
    }

    #[test]
    fn gzip_output_is_standard() {
        let data = sample(3 * GZIP_BLOCK + 5);
        let out = compress(&data, Compression::Gzip { level: 6 }, 2, 4096);
        assert_eq!(
            &out[..10],
            &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff],
            "no MTIME, no FNAME"
        );
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data);
        // And the system's gzip agrees (CRC and length checked).
        let mut child = std::process::Command::new("gzip")
            .args(["-dc"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip is part of every Debian system");
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&out).unwrap());
        let result = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(result.status.success());
        assert!(result.stdout == data);
        // Empty input is a valid empty gzip stream too.
        let empty = compress(b"", Compression::Gzip { level: 6 }, 2, 1);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&empty[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty());
    }

    #[test]
    fn zstd_output_is_standard() {
        let data = sample(2 * ZSTD_BLOCK + 99);
        let out = compress(&data, Compression::Zstd { level: 3 }, 2, 1 << 20);
        let back = zstd::stream::decode_all(&out[..]).unwrap();
        assert!(back == data);
        assert!(out.len() < data.len() / 5);
    }

    #[test]
    fn parse_and_ids() {
        assert_eq!(
            Compression::parse("gzip").unwrap(),
            Compression::Gzip { level: 4 }
        );
        assert_eq!(
            Compression::parse("zstd:19").unwrap(),
            Compression::Zstd { level: 19 }
        );
        assert_eq!(Compression::parse("none").unwrap(), Compression::None);
        for bad in ["gzip:0", "gzip:10", "zstd:x", "lz4", "none:1", ""] {
            assert!(Compression::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Compression::default().id(),
            format!("gzip;impl=zlib-rs-{ZLIB_RS_VERSION};level=4;block=1048576")
        );
    }

    #[test]
    fn pinned_versions_match_the_lock_file() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).unwrap();
        let version_of = |name: &str| {
            let prefix = format!("name = \"{name}\"\nversion = \"");
            let at = lock.find(&prefix).unwrap();
            let rest = &lock[at + prefix.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        };
        assert_eq!(
            version_of("zlib-rs"),
            ZLIB_RS_VERSION,
            "update ZLIB_RS_VERSION: the compressor id changed"
        );
        assert!(
            version_of("zstd-sys").ends_with(&format!("+zstd.{ZSTD_VERSION}")),
            "update ZSTD_VERSION: the compressor id changed"
        );
    }

    #[test]
    fn hashing_writer_counts_and_hashes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (inner, d, n) = w.finish();
        assert_eq!((inner.as_slice(), n), (&b"abc"[..], 3));
        assert_eq!(d, berth_oci::Digest::sha256(b"abc"));
    }
}
