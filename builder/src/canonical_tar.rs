//! Canonical tar: the one byte stream a set of store paths (or extra files)
//! turns into, whatever the machine. Entries are sorted bytewise by path
//! with every parent directory written explicitly; mtime is fixed (1, or
//! `SOURCE_DATE_EPOCH`), owner is uid/gid 0 (or configured) with empty
//! names; store modes are normalised (0555 for directories and executables,
//! 0444 for other files); symlinks are stored as they are; hard links become
//! regular files; no atime/ctime records; names longer than ustar allows go
//! in a PAX header with only `path`/`linkpath`/`size` records and a fixed
//! name. A path seen twice is an error.
//!
//! The writer streams to any `Write` and holds only the sorted list of
//! entries (paths and metadata), never file contents, in memory.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The tar block size.
pub const BLOCK: usize = 512;
/// Largest size the 11 octal digits of a ustar size field can hold.
const USTAR_MAX_SIZE: u64 = 0o77777777777;

/// Why a tar could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// Reading the source or writing the output failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Two entries want the same path.
    #[error("{0} would be written twice into one layer (two store paths or extra files claim it)")]
    Duplicate(String),
    /// Something a Nix store cannot contain.
    #[error(
        "{0} is a socket, FIFO or device; a store path can only hold files, directories and symlinks"
    )]
    SpecialFile(PathBuf),
    /// A file changed size while it was being read.
    #[error("{0} changed while it was being read; is something writing to the store?")]
    Changed(PathBuf),
}

/// The names in directory `src`, sorted bytewise.
fn sorted_children(src: &Path) -> Result<Vec<std::ffi::OsString>, TarError> {
    let mut children = Vec::new();
    for e in fs::read_dir(src).map_err(io_err("list", src))? {
        children.push(e.map_err(io_err("list", src))?.file_name());
    }
    children.sort();
    Ok(children)
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TarError + 'a {
    move |source| TarError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Ownership and time written into every header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TarOptions {
    /// Modification time of every entry (seconds since the epoch).
    pub mtime: u64,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
}

impl Default for TarOptions {
    fn default() -> Self {
        Self {
            mtime: 1,
            uid: 0,
            gid: 0,
        }
    }
}

impl TarOptions {
    /// The defaults, with `mtime` from `SOURCE_DATE_EPOCH` when it is set
    /// to a number.
    pub fn from_env() -> Self {
        let mtime = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1);
        Self {
            mtime,
            ..Self::default()
        }
    }
}

/// What an entry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    Dir,
    /// Copied from a file on disk, `size` bytes long.
    File {
        source: PathBuf,
        size: u64,
    },
    /// Given inline.
    Inline(Vec<u8>),
    Symlink(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    mode: u32,
    body: Body,
    /// uid and gid, when not the tar options' (extra files of a non-root
    /// user).
    owner: Option<(u32, u32)>,
}

/// A layer's entries, collected and then written in canonical order.
#[derive(Debug, Default)]
pub struct LayerEntries {
    /// Tar path (no leading `/`, no trailing `/`) → entry.
    entries: BTreeMap<Vec<u8>, Entry>,
}

fn tar_path(abs: &str) -> Vec<u8> {
    abs.trim_start_matches('/').as_bytes().to_vec()
}

impl LayerEntries {
    /// An empty layer.
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&mut self, path: Vec<u8>, entry: Entry) -> Result<(), TarError> {
        match self.entries.get(&path) {
            // The same directory from two sources is one directory.
            Some(e) if e.body == Body::Dir && entry.body == Body::Dir => Ok(()),
            Some(_) => Err(TarError::Duplicate(format!(
                "/{}",
                String::from_utf8_lossy(&path)
            ))),
            None => {
                self.entries.insert(path, entry);
                Ok(())
            }
        }
    }

    /// The paths (absolute) of the entries that are not directories.
    pub fn non_dir_paths(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| e.body != Body::Dir)
            .map(|(p, _)| format!("/{}", String::from_utf8_lossy(p)))
            .collect()
    }

    /// Add the parents of `path` as directories with `mode`.
    fn parents(&mut self, path: &[u8], mode: u32) -> Result<(), TarError> {
        let mut end = 0;
        while let Some(i) = path[end..].iter().position(|&c| c == b'/') {
            end += i;
            self.insert(
                path[..end].to_vec(),
                Entry {
                    mode,
                    body: Body::Dir,
                    owner: None,
                },
            )?;
            end += 1;
        }
        Ok(())
    }

    /// Add a store path and everything under it, with store modes, reading
    /// it from `source` (the path itself, or its copy under another root).
    /// Its parents (`nix`, `nix/store`) are added as 0555 directories.
    pub fn add_store_path(&mut self, store_path: &str, source: &Path) -> Result<(), TarError> {
        let root = tar_path(store_path);
        self.parents(&root, 0o555)?;
        self.add_tree(source, root)
    }

    fn add_tree(&mut self, src: &Path, dst: Vec<u8>) -> Result<(), TarError> {
        let meta = fs::symlink_metadata(src).map_err(io_err("stat", src))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(src).map_err(io_err("read link", src))?;
            use std::os::unix::ffi::OsStrExt;
            return self.insert(
                dst,
                Entry {
                    mode: 0o777,
                    body: Body::Symlink(target.as_os_str().as_bytes().to_vec()),
                    owner: None,
                },
            );
        }
        if ft.is_file() {
            let exec = meta.permissions().mode() & 0o111 != 0;
            return self.insert(
                dst,
                Entry {
                    mode: if exec { 0o555 } else { 0o444 },
                    body: Body::File {
                        source: src.to_owned(),
                        size: meta.len(),
                    },
                    owner: None,
                },
            );
        }
        if !ft.is_dir() {
            return Err(TarError::SpecialFile(src.to_owned()));
        }
        self.insert(
            dst.clone(),
            Entry {
                mode: 0o555,
                body: Body::Dir,
                owner: None,
            },
        )?;
        let children = sorted_children(src)?;
        use std::os::unix::ffi::OsStrExt;
        for name in children {
            let mut d = dst.clone();
            d.push(b'/');
            d.extend_from_slice(name.as_bytes());
            self.add_tree(&src.join(&name), d)?;
        }
        Ok(())
    }

    /// Link the tree of store path `store_path` (read from `source`) into
    /// `/`, as `dockerTools`' `contents` does: each directory under it
    /// becomes a 0755 directory at the same relative place in `/`, each
    /// file or symlink a symlink to its place in the store. A name already
    /// present (added earlier), or under a present non-directory, is left
    /// as it is: the first to provide a name wins.
    pub fn add_links_to(&mut self, store_path: &str, source: &Path) -> Result<(), TarError> {
        let meta = fs::metadata(source).map_err(io_err("stat", source))?;
        if !meta.is_dir() {
            return Err(TarError::Io {
                op: "link",
                path: source.to_owned(),
                source: io::Error::other("contents must be directories (like an environment)"),
            });
        }
        let target = store_path.trim_end_matches('/').as_bytes();
        self.link_tree(source, target, Vec::new())
    }

    fn link_tree(&mut self, src: &Path, target: &[u8], dst: Vec<u8>) -> Result<(), TarError> {
        let children = sorted_children(src)?;
        use std::os::unix::ffi::OsStrExt;
        for name in children {
            let mut d = dst.clone();
            if !d.is_empty() {
                d.push(b'/');
            }
            d.extend_from_slice(name.as_bytes());
            let child_src = src.join(&name);
            let mut child_target = target.to_vec();
            child_target.push(b'/');
            child_target.extend_from_slice(name.as_bytes());
            let is_dir = fs::symlink_metadata(&child_src)
                .map_err(io_err("stat", &child_src))?
                .is_dir();
            match self.entries.get(&d) {
                Some(e) if e.body == Body::Dir && is_dir => {
                    self.link_tree(&child_src, &child_target, d)?;
                }
                Some(_) => {}
                None if is_dir => {
                    self.insert(
                        d.clone(),
                        Entry {
                            mode: 0o755,
                            body: Body::Dir,
                            owner: None,
                        },
                    )?;
                    self.link_tree(&child_src, &child_target, d)?;
                }
                None => self.insert(
                    d,
                    Entry {
                        mode: 0o777,
                        body: Body::Symlink(child_target),
                        owner: None,
                    },
                )?,
            }
        }
        Ok(())
    }

    /// Add an inline file at absolute `path` with `mode`; parents are
    /// 0755 directories.
    pub fn add_file(&mut self, path: &str, contents: &[u8], mode: u32) -> Result<(), TarError> {
        let p = tar_path(path);
        self.parents(&p, 0o755)?;
        self.insert(
            p,
            Entry {
                mode,
                body: Body::Inline(contents.to_vec()),
                owner: None,
            },
        )
    }

    /// Add a regular file at absolute `path` whose contents are read from
    /// `source` when the tar is written; parents are 0755 directories.
    pub fn add_source_file(
        &mut self,
        path: &str,
        source: &Path,
        mode: u32,
    ) -> Result<(), TarError> {
        let meta = fs::metadata(source).map_err(io_err("stat", source))?;
        let p = tar_path(path);
        self.parents(&p, 0o755)?;
        self.insert(
            p,
            Entry {
                mode,
                body: Body::File {
                    source: source.to_owned(),
                    size: meta.len(),
                },
                owner: None,
            },
        )
    }

    /// Add a directory at absolute `path` with `mode`.
    pub fn add_dir(&mut self, path: &str, mode: u32) -> Result<(), TarError> {
        let p = tar_path(path);
        self.parents(&p, 0o755)?;
        // An explicit mode wins over an implied parent's.
        match self.entries.get_mut(&p) {
            Some(e) if e.body == Body::Dir => {
                e.mode = mode;
                Ok(())
            }
            _ => self.insert(
                p,
                Entry {
                    mode,
                    body: Body::Dir,
                    owner: None,
                },
            ),
        }
    }

    /// Add a symlink at absolute `path` pointing at `target`.
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), TarError> {
        let p = tar_path(path);
        self.parents(&p, 0o755)?;
        self.insert(
            p,
            Entry {
                mode: 0o777,
                body: Body::Symlink(target.as_bytes().to_vec()),
                owner: None,
            },
        )
    }

    /// Give the entry at absolute `path` (added before) its own owner.
    pub fn set_owner(&mut self, path: &str, uid: u32, gid: u32) {
        if let Some(e) = self.entries.get_mut(&tar_path(path)) {
            e.owner = Some((uid, gid));
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The exact length of what [`Self::write_to`] writes, from the sizes
    /// recorded when the entries were added (a file that changed since is
    /// an error when it is written).
    pub fn tar_len(&self) -> u64 {
        let mut n = 2 * BLOCK as u64;
        for (path, entry) in &self.entries {
            let dir = u64::from(entry.body == Body::Dir);
            let (size, link): (u64, &[u8]) = match &entry.body {
                Body::Dir => (0, b""),
                Body::File { size, .. } => (*size, b""),
                Body::Inline(c) => (c.len() as u64, b""),
                Body::Symlink(t) => (0, t),
            };
            let name_len = path.len() as u64 + dir;
            n += header_len(name_len, link.len() as u64, size);
            n += size + padding(size) as u64;
        }
        n
    }

    /// Write the tar, entries in bytewise path order, then the two zero
    /// blocks that end an archive. Returns the bytes written.
    pub fn write_to(&self, out: &mut impl Write, opts: TarOptions) -> Result<u64, TarError> {
        let mut w = Counting { inner: out, n: 0 };
        let out_path = Path::new("<tar output>");
        let mut buf = vec![0u8; 256 * 1024];
        for (path, entry) in &self.entries {
            let mut name = path.clone();
            if entry.body == Body::Dir {
                name.push(b'/');
            }
            let (typeflag, size, link): (u8, u64, &[u8]) = match &entry.body {
                Body::Dir => (b'5', 0, b""),
                Body::File { size, .. } => (b'0', *size, b""),
                Body::Inline(c) => (b'0', c.len() as u64, b""),
                Body::Symlink(t) => (b'2', 0, t),
            };
            let header_opts = match entry.owner {
                Some((uid, gid)) => TarOptions { uid, gid, ..opts },
                None => opts,
            };
            write_header(&mut w, &name, typeflag, entry.mode, size, link, header_opts)
                .map_err(io_err("write", out_path))?;
            match &entry.body {
                Body::File { source, size } => {
                    let mut f = fs::File::open(source).map_err(io_err("open", source))?;
                    let mut left = *size;
                    while left > 0 {
                        let want = left.min(buf.len() as u64) as usize;
                        let n = f.read(&mut buf[..want]).map_err(io_err("read", source))?;
                        if n == 0 {
                            return Err(TarError::Changed(source.clone()));
                        }
                        w.write_all(&buf[..n]).map_err(io_err("write", out_path))?;
                        left -= n as u64;
                    }
                    if f.read(&mut buf[..1]).map_err(io_err("read", source))? != 0 {
                        return Err(TarError::Changed(source.clone()));
                    }
                    pad(&mut w, *size).map_err(io_err("write", out_path))?;
                }
                Body::Inline(c) => {
                    w.write_all(c).map_err(io_err("write", out_path))?;
                    pad(&mut w, c.len() as u64).map_err(io_err("write", out_path))?;
                }
                Body::Dir | Body::Symlink(_) => {}
            }
        }
        w.write_all(&[0u8; 2 * BLOCK])
            .map_err(io_err("write", out_path))?;
        Ok(w.n)
    }
}

struct Counting<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn pad(w: &mut impl Write, size: u64) -> io::Result<()> {
    w.write_all(&[0u8; BLOCK][..padding(size)])
}

/// Write `value` as zero-padded octal with a NUL terminator into `field`.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

/// The length of [`header_bytes`] for these lengths and size.
fn header_len(name_len: u64, link_len: u64, size: u64) -> u64 {
    let record = |key: &str, value_len: u64| {
        let body = key.len() as u64 + value_len + 3;
        let mut len = body + 1;
        while len != body + len.to_string().len() as u64 {
            len = body + len.to_string().len() as u64;
        }
        len
    };
    let mut pax = 0;
    if name_len > 100 {
        pax += record("path", name_len);
    }
    if link_len > 100 {
        pax += record("linkpath", link_len);
    }
    if size > USTAR_MAX_SIZE {
        pax += record("size", size.to_string().len() as u64);
    }
    let block = BLOCK as u64;
    if pax == 0 {
        block
    } else {
        2 * block + pax.div_ceil(block) * block
    }
}

/// One PAX record: `<len> <key>=<value>\n`, where len counts itself.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn write_header(
    w: &mut impl Write,
    name: &[u8],
    typeflag: u8,
    mode: u32,
    size: u64,
    link: &[u8],
    opts: TarOptions,
) -> io::Result<()> {
    w.write_all(&header_bytes(name, typeflag, mode, size, link, opts))
}

/// The header blocks of one entry: a PAX header when the name, link or
/// size does not fit ustar, then the ustar header. Its length depends only
/// on the lengths of `name` and `link` and on `size`.
fn header_bytes(
    name: &[u8],
    typeflag: u8,
    mode: u32,
    size: u64,
    link: &[u8],
    opts: TarOptions,
) -> Vec<u8> {
    // ustar can split a long name into prefix (155) + name (100); a PAX
    // header is simpler and unambiguous, so use it whenever the name does
    // not fit the 100-byte field.
    let mut pax = Vec::new();
    if name.len() > 100 {
        pax_record(&mut pax, "path", name);
    }
    if link.len() > 100 {
        pax_record(&mut pax, "linkpath", link);
    }
    if size > USTAR_MAX_SIZE {
        pax_record(&mut pax, "size", size.to_string().as_bytes());
    }
    let mut out = Vec::with_capacity(BLOCK);
    if !pax.is_empty() {
        let header = ustar_header(b"././@PaxHeader", b'x', 0o644, pax.len() as u64, b"", opts);
        out.extend_from_slice(&header);
        out.extend_from_slice(&pax);
        out.resize(out.len() + padding(pax.len() as u64), 0);
    }
    let short_name = &name[..name.len().min(100)];
    let short_link = &link[..link.len().min(100)];
    out.extend_from_slice(&ustar_header(
        short_name,
        typeflag,
        mode,
        size.min(USTAR_MAX_SIZE),
        short_link,
        opts,
    ));
    out
}

/// The header of a regular file `name` (relative, no leading `/`) of `size`
/// bytes: for writers that place file data themselves.
pub fn file_header(name: &str, mode: u32, size: u64, opts: TarOptions) -> Vec<u8> {
    header_bytes(name.as_bytes(), b'0', mode, size, b"", opts)
}

/// The header of a directory `name` (relative, ending in `/`).
pub fn dir_header(name: &str, mode: u32, opts: TarOptions) -> Vec<u8> {
    header_bytes(name.as_bytes(), b'5', mode, 0, b"", opts)
}

/// The zero bytes that pad `size` bytes of data to a whole block.
pub fn padding(size: u64) -> usize {
    (BLOCK - (size % BLOCK as u64) as usize) % BLOCK
}

fn ustar_header(
    name: &[u8],
    typeflag: u8,
    mode: u32,
    size: u64,
    link: &[u8],
    opts: TarOptions,
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], u64::from(opts.uid));
    octal(&mut h[116..124], u64::from(opts.gid));
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], opts.mtime.min(0o77777777777));
    h[148..156].copy_from_slice(b"        ");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], 0);
    octal(&mut h[337..345], 0);
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    // Six octal digits, NUL, space: the traditional checksum layout.
    let s = format!("{sum:06o}");
    h[148..154].copy_from_slice(s.as_bytes());
    h[154] = 0;
    h[155] = b' ';
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path) {
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("share/doc")).unwrap();
        fs::write(root.join("bin/app"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(root.join("bin/app"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(root.join("share/doc/README"), b"read me").unwrap();
        fs::set_permissions(
            root.join("share/doc/README"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let long = "x".repeat(150);
        fs::write(root.join("share").join(&long), vec![7u8; 1000]).unwrap();
        std::os::unix::fs::symlink("../share/doc/README", root.join("bin/readme")).unwrap();
        std::os::unix::fs::symlink("y".repeat(120), root.join("bin/longlink")).unwrap();
        fs::hard_link(
            root.join("share/doc/README"),
            root.join("share/doc/README.hard"),
        )
        .unwrap();
    }

    fn build(root: &Path, opts: TarOptions) -> Vec<u8> {
        let mut e = LayerEntries::new();
        e.add_store_path(root.to_str().unwrap(), root).unwrap();
        e.add_dir("/tmp", 0o1777).unwrap();
        e.add_file("/etc/passwd", b"root:x:0:0::/:/bin/sh\n", 0o444)
            .unwrap();
        e.add_symlink("/bin", "/nix/store/env/bin").unwrap();
        let mut out = Vec::new();
        let n = e.write_to(&mut out, opts).unwrap();
        assert_eq!(n as usize, out.len());
        assert_eq!(e.tar_len(), n, "tar_len predicts the bytes written");
        assert_eq!(out.len() % BLOCK, 0);
        out
    }

    #[test]
    fn on_disk_times_and_permissions_do_not_matter() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sp");
        tree(&root);
        let first = build(&root, TarOptions::default());
        // Rebuild the tree later, with other permission bits (same
        // executability) and creation order.
        fs::remove_dir_all(&root).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        tree(&root);
        fs::set_permissions(
            root.join("share/doc/README"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        fs::set_permissions(root.join("bin/app"), fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            build(&root, TarOptions::default()) == first,
            "same content, same bytes"
        );
        assert!(
            build(
                &root,
                TarOptions {
                    mtime: 2,
                    ..TarOptions::default()
                }
            ) != first
        );
        assert!(
            build(
                &root,
                TarOptions {
                    uid: 1000,
                    ..TarOptions::default()
                }
            ) != first
        );
    }

    #[test]
    fn gnu_tar_reads_it_with_normalised_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sp");
        tree(&root);
        let t = build(&root, TarOptions::default());
        let file = dir.path().join("layer.tar");
        fs::write(&file, &t).unwrap();
        let out = std::process::Command::new("tar")
            .args([
                "--list",
                "--verbose",
                "--numeric-owner",
                "--full-time",
                "-f",
            ])
            .arg(&file)
            .output()
            .expect("GNU tar is part of every Debian system");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8(out.stdout).unwrap();
        let root_rel = root.to_str().unwrap().trim_start_matches('/');
        // The line whose name field is `<root>/<suffix>` or, for paths
        // outside the store path, `suffix` itself.
        let line = |suffix: &str| {
            let want = [format!("{root_rel}/{suffix}"), suffix.to_owned()];
            listing
                .lines()
                .find(|l| {
                    l.split_whitespace()
                        .nth(5)
                        .is_some_and(|n| want.iter().any(|w| w == n))
                })
                .unwrap_or_else(|| panic!("{suffix} not in\n{listing}"))
                .to_owned()
        };
        assert!(
            line("bin/app").starts_with("-r-xr-xr-x 0/0"),
            "{}",
            line("bin/app")
        );
        assert!(line("share/doc/README").starts_with("-r--r--r-- 0/0"));
        assert!(
            line("share/doc/README.hard").starts_with("-r--r--r--"),
            "hard links become files"
        );
        assert!(line("bin/readme").starts_with("lrwxrwxrwx 0/0"));
        assert!(line("bin/readme").ends_with("-> ../share/doc/README"));
        assert!(
            line(&format!("share/{}", "x".repeat(150))).contains(" 1000 "),
            "PAX long name"
        );
        assert!(
            line("bin/longlink").ends_with(&"y".repeat(120)),
            "PAX long link"
        );
        assert!(
            line("tmp/").starts_with("drwxrwxrwt 0/0"),
            "{}",
            line("tmp/")
        );
        assert!(line("etc/").starts_with("drwxr-xr-x"));
        assert!(
            listing.lines().all(|l| l.contains("1970-01-01 00:00:01")),
            "{listing}"
        );
        // Every parent directory precedes its children.
        let names: Vec<&str> = listing
            .lines()
            .map(|l| l.split_whitespace().nth(5).unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "entries are in bytewise order");
        assert!(
            names.contains(&"nix/")
                || names
                    .iter()
                    .any(|n| root_rel.starts_with(n.trim_end_matches('/')))
        );
        // And it extracts to the same content.
        let x = dir.path().join("x");
        fs::create_dir(&x).unwrap();
        let st = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&file)
            .arg("-C")
            .arg(&x)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(
            fs::read(x.join(root_rel).join("share/doc/README")).unwrap(),
            b"read me"
        );
    }

    #[test]
    fn duplicates_and_special_files_are_refused() {
        let mut e = LayerEntries::new();
        e.add_file("/etc/passwd", b"a", 0o444).unwrap();
        assert!(matches!(
            e.add_file("/etc/passwd", b"b", 0o444),
            Err(TarError::Duplicate(_))
        ));
        assert!(matches!(
            e.add_symlink("/etc", "/x"),
            Err(TarError::Duplicate(_))
        ));
        e.add_dir("/etc", 0o700).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("sp");
        fs::create_dir(&fifo).unwrap();
        let st = std::process::Command::new("mkfifo")
            .arg(fifo.join("pipe"))
            .status()
            .unwrap();
        assert!(st.success());
        let mut e = LayerEntries::new();
        assert!(matches!(
            e.add_store_path(fifo.to_str().unwrap(), &fifo),
            Err(TarError::SpecialFile(_))
        ));
    }

    #[test]
    fn tar_len_counts_pax_headers() {
        let mut e = LayerEntries::new();
        for len in [98, 99, 100, 101, 200, 600, 5000] {
            let name = format!("/{}", "n".repeat(len));
            e.add_file(&name, &vec![7u8; len], 0o444).unwrap();
            e.add_symlink(&format!("{name}-link"), &"t".repeat(len))
                .unwrap();
        }
        let mut out = Vec::new();
        let n = e.write_to(&mut out, TarOptions::default()).unwrap();
        assert_eq!(e.tar_len(), n);
        assert_eq!(
            file_header("a", 0o444, USTAR_MAX_SIZE + 1, TarOptions::default()).len(),
            header_len(1, 0, USTAR_MAX_SIZE + 1) as usize
        );
    }

    #[test]
    fn pax_record_length_counts_itself() {
        for n in [1, 5, 90, 95, 96, 97, 990, 995, 996, 10_000] {
            let mut out = Vec::new();
            pax_record(&mut out, "path", "p".repeat(n).as_bytes());
            let text = String::from_utf8(out.clone()).unwrap();
            let len: usize = text.split(' ').next().unwrap().parse().unwrap();
            assert_eq!(len, out.len(), "{n}");
        }
    }
}
