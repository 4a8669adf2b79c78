//! Plain file access for layer files: positioned reads with bounds checks, and a buffered
//! appender that tracks its offset.
//!
//! Everything here is synchronous; async callers run it on a blocking thread.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::LayerError;

/// Size of a layer file block: the summary block and every index node are this big.
pub const BLOCK_SIZE_BYTES: usize = 8192;

/// Bytes the appender buffers before writing them to the file.
pub const WRITE_BUFFER_BYTES: usize = 128 * 1024;

/// A file opened for positioned reads. Shareable between threads (`read_at` takes `&self`).
#[derive(Debug)]
pub struct ReadFile {
    file: File,
    path: PathBuf,
    size_bytes: u64,
}

impl ReadFile {
    /// Opens `path` read-only and records its size.
    pub fn open(path: &Path) -> Result<Self, LayerError> {
        let file = File::open(path).map_err(|e| LayerError::io("open", path, e))?;
        let size_bytes = file
            .metadata()
            .map_err(|e| LayerError::io("stat", path, e))?
            .len();
        Ok(ReadFile {
            file,
            path: path.to_path_buf(),
            size_bytes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file size when it was opened.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Fills `buf` from `offset`. A range past the end of the file is reported as
    /// corruption without touching the disk.
    pub fn read_exact_at(
        &self,
        buf: &mut [u8],
        offset: u64,
        what: &'static str,
    ) -> Result<(), LayerError> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.size_bytes) {
            return Err(LayerError::corrupt(
                &self.path,
                format!(
                    "{what} at offset {offset} ({} bytes) extends past the end of the \
                     {}-byte file",
                    buf.len(),
                    self.size_bytes
                ),
            ));
        }
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                LayerError::corrupt(&self.path, format!("file shrank while reading {what}"))
            } else {
                LayerError::io("read", &self.path, e)
            }
        })
    }

    /// Reads block `blk` (of [`BLOCK_SIZE_BYTES`]) into `buf`.
    pub fn read_block(
        &self,
        blk: u32,
        buf: &mut [u8; BLOCK_SIZE_BYTES],
        what: &'static str,
    ) -> Result<(), LayerError> {
        self.read_exact_at(buf, u64::from(blk) * BLOCK_SIZE_BYTES as u64, what)
    }
}

/// A new file written front to back through a bounded buffer.
#[derive(Debug)]
pub struct AppendFile {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    /// Bytes written to the file itself (excluding `buf`).
    flushed_bytes: u64,
}

impl AppendFile {
    /// Creates (or truncates) `path` for writing.
    pub fn create(path: &Path) -> Result<Self, LayerError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| LayerError::io("create", path, e))?;
        Ok(AppendFile {
            file,
            path: path.to_path_buf(),
            buf: Vec::with_capacity(WRITE_BUFFER_BYTES),
            flushed_bytes: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The offset the next appended byte will have.
    pub fn offset(&self) -> u64 {
        self.flushed_bytes + self.buf.len() as u64
    }

    /// Appends `data`, buffering small writes.
    pub fn append(&mut self, data: &[u8]) -> Result<(), LayerError> {
        if self.buf.len() + data.len() > WRITE_BUFFER_BYTES {
            self.flush()?;
        }
        if data.len() >= WRITE_BUFFER_BYTES {
            self.write_direct(data)
        } else {
            self.buf.extend_from_slice(data);
            Ok(())
        }
    }

    /// Appends zeros up to the next multiple of [`BLOCK_SIZE_BYTES`].
    pub fn pad_to_block(&mut self) -> Result<(), LayerError> {
        let rem = (self.offset() % BLOCK_SIZE_BYTES as u64) as usize;
        if rem != 0 {
            let zeros = [0u8; BLOCK_SIZE_BYTES];
            self.append(&zeros[..BLOCK_SIZE_BYTES - rem])?;
        }
        Ok(())
    }

    /// Writes the buffered bytes to the file.
    pub fn flush(&mut self) -> Result<(), LayerError> {
        if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            let res = self.write_direct(&buf);
            self.buf = buf;
            self.buf.clear();
            res?;
        }
        Ok(())
    }

    fn write_direct(&mut self, data: &[u8]) -> Result<(), LayerError> {
        self.file
            .write_all(data)
            .map_err(|e| LayerError::io("write", &self.path, e))?;
        self.flushed_bytes += data.len() as u64;
        Ok(())
    }

    /// Appends the first `len` bytes of `src`'s file (an [`AppendFile`] that is done).
    pub fn append_file(&mut self, src: &mut AppendFile) -> Result<(), LayerError> {
        src.flush()?;
        self.flush()?;
        let len = src.flushed_bytes;
        src.file
            .seek(SeekFrom::Start(0))
            .map_err(|e| LayerError::io("seek", &src.path, e))?;
        let mut reader = io::Read::take(&src.file, len);
        let copied = io::copy(&mut reader, &mut self.file)
            .map_err(|e| LayerError::io("copy into", &self.path, e))?;
        if copied != len {
            return Err(LayerError::io(
                "copy from",
                &src.path,
                io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while copying"),
            ));
        }
        self.flushed_bytes += len;
        Ok(())
    }

    /// Overwrites already appended bytes at `offset` (all of them must be flushed).
    pub fn write_at(&mut self, data: &[u8], offset: u64) -> Result<(), LayerError> {
        self.flush()?;
        if offset.saturating_add(data.len() as u64) > self.flushed_bytes {
            return Err(LayerError::io(
                "overwrite",
                &self.path,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "write_at past the appended data",
                ),
            ));
        }
        self.file
            .write_all_at(data, offset)
            .map_err(|e| LayerError::io("write", &self.path, e))
    }

    /// Flushes the buffer and fsyncs the file.
    pub fn sync(&mut self) -> Result<(), LayerError> {
        self.flush()?;
        self.file
            .sync_all()
            .map_err(|e| LayerError::io("fsync", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_pad_copy_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = AppendFile::create(&dir.path().join("a")).unwrap();
        let mut b = AppendFile::create(&dir.path().join("b")).unwrap();
        a.append(b"hello").unwrap();
        assert_eq!(a.offset(), 5);
        let big = vec![7u8; WRITE_BUFFER_BYTES + 3];
        a.append(&big).unwrap();
        assert_eq!(a.offset(), 5 + big.len() as u64);
        a.pad_to_block().unwrap();
        assert_eq!(a.offset() % BLOCK_SIZE_BYTES as u64, 0);
        let padded = a.offset();
        b.append(b"tail").unwrap();
        a.append_file(&mut b).unwrap();
        assert_eq!(a.offset(), padded + 4);
        a.write_at(b"J", 0).unwrap();
        a.sync().unwrap();

        let r = ReadFile::open(&dir.path().join("a")).unwrap();
        assert_eq!(r.size_bytes(), padded + 4);
        let mut buf = [0u8; 5];
        r.read_exact_at(&mut buf, 0, "test").unwrap();
        assert_eq!(&buf, b"Jello");
        let mut tail = [0u8; 4];
        r.read_exact_at(&mut tail, padded, "test").unwrap();
        assert_eq!(&tail, b"tail");
        let err = r.read_exact_at(&mut tail, padded + 1, "test").unwrap_err();
        assert!(matches!(err, LayerError::Corrupt { .. }), "{err}");
        let err = r
            .read_exact_at(&mut tail, u64::MAX - 1, "test")
            .unwrap_err();
        assert!(matches!(err, LayerError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn open_missing_file_is_io_error_with_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = ReadFile::open(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, LayerError::Io { .. }));
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
