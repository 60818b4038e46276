//! Reading the configuration file, bounded whatever sits at its path (docs/yaml.md,
//! errors: nothing in or at a bad file can take nginx down).
//!
//! nginx's master reads the file as root on start and reload, and with `watch=`
//! every worker reads it every interval. So the read never blocks (a FIFO at the
//! path would hang `open()`), never reads what is not a regular file (`/dev/zero`
//! never ends; a device or a root-only pipe must not be echoed), and never reads
//! more than a cap (a 50 MB file is refused from its size, unread).

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::config::ConfigError;

/// `max_size=` when not given: far more than a Kubernetes ConfigMap can hold
/// (1 MiB), small enough that any file under it is read and checked quickly.
pub const DEFAULT_MAX_SIZE: u64 = 16 * 1024 * 1024;

/// What `stat` says of a file: when none of it changed, the content did not
/// either (as far as a watcher can tell without reading it). A Kubernetes
/// ConfigMap update swaps a symlink, which changes the inode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileStamp {
    pub device: u64,
    pub inode: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl FileStamp {
    fn of(m: &Metadata) -> FileStamp {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        FileStamp {
            device: m.dev(),
            inode: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }

    /// The file at `path` (through symlinks), without opening it.
    pub fn at(path: &Path) -> std::io::Result<FileStamp> {
        std::fs::metadata(path).map(|m| FileStamp::of(&m))
    }
}

/// Reads the file at `path`: a regular file of at most `max_size` bytes, opened
/// without blocking. Returns its bytes and its stamp (taken from the open file).
pub fn read_bounded(path: &Path, max_size: u64) -> Result<(Vec<u8>, FileStamp), ConfigError> {
    let name = path.display().to_string();
    let refuse = |message: String| ConfigError::new(&name, None, "", message);
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| refuse(format!("cannot read the file: {e}")))?;
    let metadata = file.metadata().map_err(|e| refuse(format!("cannot read the file: {e}")))?;
    let kind = metadata.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(refuse(format!("is {what}, not a regular file; the configuration must be a regular file")));
    }
    if metadata.len() > max_size {
        return Err(refuse(format!(
            "is {} bytes, more than max_size ({max_size} bytes); raise max_size= on migration_config if it is meant",
            metadata.len()
        )));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    // One byte more than allowed: a file that grew since fstat is seen, not cut.
    file.take(max_size + 1).read_to_end(&mut bytes).map_err(|e| refuse(format!("cannot read the file: {e}")))?;
    if bytes.len() as u64 > max_size {
        return Err(refuse(format!("grew past max_size ({max_size} bytes) while it was read")));
    }
    Ok((bytes, FileStamp::of(&metadata)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("migration-source-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let dir = temp("kinds");
        let e = read_bounded(&dir, DEFAULT_MAX_SIZE).unwrap_err();
        assert!(e.message.starts_with("is a directory, not a regular file"), "{e}");
        let e = read_bounded(Path::new("/dev/zero"), DEFAULT_MAX_SIZE).unwrap_err();
        assert!(e.message.starts_with("is a device, not a regular file"), "{e}");
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(mkfifo(&c), 0);
        // Opening a FIFO without a writer would block; it must not.
        let e = read_bounded(&fifo, DEFAULT_MAX_SIZE).unwrap_err();
        assert!(e.message.starts_with("is a FIFO, not a regular file"), "{e}");
        let link = dir.join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(read_bounded(&link, DEFAULT_MAX_SIZE).unwrap_err().message.starts_with("is a device"));
    }

    /// mkfifo(1): this crate has no unsafe code, so no libc::mkfifo.
    fn mkfifo(path: &std::ffi::CString) -> i32 {
        let status = std::process::Command::new("mkfifo").arg(path.to_str().unwrap()).status().unwrap();
        if status.success() {
            0
        } else {
            1
        }
    }

    #[test]
    fn caps_the_size_and_stamps_the_file() {
        let dir = temp("size");
        let file = dir.join("m.yaml");
        std::fs::write(&file, vec![b'#'; 100]).unwrap();
        let (bytes, stamp) = read_bounded(&file, 100).unwrap();
        assert_eq!((bytes.len(), stamp.size), (100, 100));
        assert_eq!(FileStamp::at(&file).unwrap(), stamp);
        let e = read_bounded(&file, 99).unwrap_err();
        assert_eq!(
            e.message,
            "is 100 bytes, more than max_size (99 bytes); raise max_size= on migration_config if it is meant"
        );
        std::fs::write(&file, vec![b'#'; 101]).unwrap();
        assert_ne!(FileStamp::at(&file).unwrap(), stamp, "a rewrite changes the stamp");
    }
}
