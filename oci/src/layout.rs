//! OCI image layout directories (`oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>`): creating one, writing blobs atomically (a temporary
//! file renamed into place, so a reader never sees a partial blob), reading
//! blobs back with their digest verified, and keeping `index.json` entries
//! named by `org.opencontainers.image.ref.name`.
//!
//! Synchronous `std::fs` I/O: the builder calls it from worker threads.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType};

use crate::digest::{Algorithm, Digest, DigestError, VerifyingReader};

/// The annotation that names a manifest in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_CONTENT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// Why a layout operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The directory is not an OCI layout.
    #[error(
        "{0} is not an OCI image layout (no oci-layout file); create it with `umoci init` or `berth build -o oci:DIR`"
    )]
    NotALayout(PathBuf),
    /// `index.json` or `oci-layout` does not parse.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// A blob's content does not match its name.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// A blob is absent.
    #[error("blob {0} is not in the layout")]
    MissingBlob(Digest),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LayoutError + 'a {
    move |source| LayoutError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// An OCI image layout on disk.
#[derive(Debug, Clone)]
pub struct ImageLayout {
    root: PathBuf,
}

impl ImageLayout {
    /// Create a layout at `root` (the directory may exist; an existing
    /// `index.json` is kept).
    pub fn create(root: impl Into<PathBuf>) -> Result<Self, LayoutError> {
        let root = root.into();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = root.join("blobs").join(alg.as_str());
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        }
        let layout = Self { root };
        let marker = layout.root.join(LAYOUT_FILE);
        if !marker.exists() {
            layout.write_atomic(&marker, LAYOUT_CONTENT.as_bytes())?;
        }
        if !layout.index_path().exists() {
            layout.write_index(&empty_index())?;
        }
        Ok(layout)
    }

    /// Open an existing layout.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, LayoutError> {
        let root = root.into();
        if !root.join(LAYOUT_FILE).is_file() {
            return Err(LayoutError::NotALayout(root));
        }
        Ok(Self { root })
    }

    /// The layout's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Where a blob lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// True if the blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    fn write_atomic(&self, path: &Path, data: &[u8]) -> Result<(), LayoutError> {
        let dir = path.parent().unwrap_or(&self.root);
        let mut tmp = output_temp(dir).map_err(io_err("create temp in", dir))?;
        tmp.write_all(data).map_err(io_err("write", path))?;
        tmp.persist(path)
            .map_err(|e| e.error)
            .map_err(io_err("rename into", path))?;
        Ok(())
    }

    /// Store `data` as a sha256 blob and return its digest.
    pub fn write_blob(&self, data: &[u8]) -> Result<Digest, LayoutError> {
        let digest = Digest::sha256(data);
        let path = self.blob_path(&digest);
        if !path.exists() {
            self.write_atomic(&path, data)?;
        }
        Ok(digest)
    }

    /// Stream a blob in from `reader`. With `expected`, the content must hash
    /// to it (and is stored under its algorithm); without, it is hashed with
    /// sha256. Nothing is stored if the content does not verify.
    pub fn write_blob_from(
        &self,
        mut reader: impl Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), LayoutError> {
        let alg = expected.map_or(Algorithm::Sha256, Digest::algorithm);
        let dir = self.root.join("blobs").join(alg.as_str());
        let mut tmp = output_temp(&dir).map_err(io_err("create temp in", &dir))?;
        let mut hasher = alg.hasher();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(io_err("read blob for", &dir))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .map_err(io_err("write", tmp.path()))?;
            size += n as u64;
        }
        let digest = hasher.finish();
        if let Some(want) = expected {
            if want != &digest {
                return Err(DigestError::Mismatch {
                    expected: want.clone(),
                    actual: digest,
                }
                .into());
            }
        }
        let path = self.blob_path(&digest);
        tmp.persist(&path)
            .map_err(|e| e.error)
            .map_err(io_err("rename into", &path))?;
        Ok((digest, size))
    }

    /// Open a blob for reading; the reader fails at its end if the content
    /// does not match the digest.
    pub fn open_blob(&self, digest: &Digest) -> Result<VerifyingReader<File>, LayoutError> {
        let path = self.blob_path(digest);
        match File::open(&path) {
            Ok(f) => Ok(VerifyingReader::new(f, digest.clone())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(LayoutError::MissingBlob(digest.clone()))
            }
            Err(e) => Err(io_err("open", &path)(e)),
        }
    }

    /// Read a whole blob, verified.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, LayoutError> {
        let path = self.blob_path(digest);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LayoutError::MissingBlob(digest.clone()));
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        digest.verify(&data)?;
        Ok(data)
    }

    /// The layout's `index.json`.
    pub fn index(&self) -> Result<ImageIndex, LayoutError> {
        let path = self.index_path();
        let data = fs::read(&path).map_err(io_err("read", &path))?;
        serde_json::from_slice(&data).map_err(|source| LayoutError::Json { path, source })
    }

    /// Replace `index.json` atomically.
    pub fn write_index(&self, index: &ImageIndex) -> Result<(), LayoutError> {
        let path = self.index_path();
        let data = serde_json::to_vec(index).map_err(|source| LayoutError::Json {
            path: path.clone(),
            source,
        })?;
        self.write_atomic(&path, &data)
    }

    /// Add a manifest descriptor to `index.json`, named `ref_name` if given;
    /// an entry with the same name is replaced.
    pub fn add_manifest(
        &self,
        mut descriptor: Descriptor,
        ref_name: Option<&str>,
    ) -> Result<(), LayoutError> {
        let mut index = self.index()?;
        let mut manifests = index.manifests().clone();
        if ref_name.is_none() {
            // An unnamed entry is recorded once per digest.
            manifests.retain(|m| ref_name_of(m).is_some() || m.digest() != descriptor.digest());
        }
        if let Some(name) = ref_name {
            manifests.retain(|m| ref_name_of(m) != Some(name));
            let mut ann = descriptor.annotations().clone().unwrap_or_default();
            ann.insert(REF_NAME.to_owned(), name.to_owned());
            descriptor.set_annotations(Some(ann));
        }
        manifests.push(descriptor);
        index.set_manifests(manifests);
        self.write_index(&index)
    }

    /// Empty `index.json`'s manifest list (the blobs stay).
    pub fn clear_manifests(&self) -> Result<(), LayoutError> {
        let mut index = self.index()?;
        if index.manifests().is_empty() {
            return Ok(());
        }
        index.set_manifests(Vec::new());
        self.write_index(&index)
    }

    /// The descriptor named `ref_name` in `index.json`; with `None`, the only
    /// entry if there is exactly one.
    pub fn find_manifest(&self, ref_name: Option<&str>) -> Result<Option<Descriptor>, LayoutError> {
        let index = self.index()?;
        let found = match ref_name {
            Some(name) => index
                .manifests()
                .iter()
                .find(|m| ref_name_of(m) == Some(name))
                .cloned(),
            None if index.manifests().len() == 1 => index.manifests().first().cloned(),
            None => None,
        };
        Ok(found)
    }
}

/// A temporary file in `dir` for an output that is then renamed into
/// place, created with mode 0666 less the umask — the mode `open(2)`
/// would give the final file — rather than tempfile's private 0600, so
/// other users and services can read what berth wrote when the umask lets
/// them.
pub fn output_temp(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(".berth-")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
}

/// The `org.opencontainers.image.ref.name` of a descriptor.
pub fn ref_name_of(d: &Descriptor) -> Option<&str> {
    d.annotations().as_ref()?.get(REF_NAME).map(String::as_str)
}

fn empty_index() -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::<Descriptor>::new())
        .build()
        .expect("an empty index has every required field")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_roundtrip_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let layout = ImageLayout::create(dir.path()).unwrap();
        let d = layout.write_blob(b"hello").unwrap();
        assert!(layout.has_blob(&d));
        assert_eq!(layout.read_blob(&d).unwrap(), b"hello");

        let (d2, n) = layout.write_blob_from(&b"streamed"[..], None).unwrap();
        assert_eq!(n, 8);
        assert_eq!(d2, Digest::sha256(b"streamed"));

        // Content that does not verify is never stored.
        let wrong = Digest::sha256(b"other");
        assert!(
            layout
                .write_blob_from(&b"streamed"[..], Some(&wrong))
                .is_err()
        );
        assert!(!layout.has_blob(&wrong));

        // A corrupted blob is detected on read.
        fs::write(layout.blob_path(&d), b"tampered").unwrap();
        assert!(matches!(layout.read_blob(&d), Err(LayoutError::Digest(_))));
        let mut sink = Vec::new();
        assert!(
            layout
                .open_blob(&d)
                .unwrap()
                .read_to_end(&mut sink)
                .is_err()
        );
    }

    #[test]
    fn index_entries_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let layout = ImageLayout::create(dir.path()).unwrap();
        assert!(ImageLayout::open(dir.path()).is_ok());
        assert!(ImageLayout::open(dir.path().join("nope")).is_err());
        let m1 = layout.write_blob(b"{}").unwrap();
        let desc = |d: &Digest| {
            oci_spec::image::DescriptorBuilder::default()
                .media_type(MediaType::ImageManifest)
                .digest(oci_spec::image::Digest::from(d))
                .size(2u64)
                .build()
                .unwrap()
        };
        layout.add_manifest(desc(&m1), Some("latest")).unwrap();
        let m2 = layout.write_blob(b"{ }").unwrap();
        layout.add_manifest(desc(&m2), Some("latest")).unwrap();
        let index = layout.index().unwrap();
        assert_eq!(index.manifests().len(), 1);
        let found = layout.find_manifest(Some("latest")).unwrap().unwrap();
        assert_eq!(found.digest().to_string(), m2.to_string());
        assert_eq!(
            layout
                .find_manifest(None)
                .unwrap()
                .unwrap()
                .digest()
                .to_string(),
            m2.to_string()
        );
        assert!(layout.find_manifest(Some("other")).unwrap().is_none());
    }
}
