//! Where `hist --out` writes, chosen and checked before any network work.
//!
//! - `-` (or no `--out`): standard output.
//! - A symlink is followed to its target (a dangling one names the file to create); the link
//!   itself is never replaced.
//! - A device, FIFO or socket is opened and written in place, never replaced: `--out /dev/null`
//!   stays a device, and a FIFO's reader gets the rows.
//! - A regular file (or a new one) is written atomically: into a temporary file created with a
//!   unique name (`create_new`, so an existing file of that name is never touched) in the same
//!   directory, then renamed over the target. Creating it up front checks that the directory
//!   is writable before the download starts; an error removes it.
//!
//! Every error names the path.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

/// How many symlinks are followed before giving up (Linux's own limit).
const MAX_SYMLINK_HOPS: usize = 40;

/// A checked destination for the output.
#[derive(Debug)]
pub(crate) enum Out {
    /// Standard output.
    Stdout,
    /// An existing non-regular file (device, FIFO, socket): opened and written in place.
    InPlace(PathBuf),
    /// A regular file, replaced by renaming `tmp` over `target` once written.
    Atomic {
        target: PathBuf,
        tmp: PathBuf,
        file: Option<File>,
    },
}

/// Fails when standard output was closed (`>&-`), before any network work.
///
/// Rust's runtime reopens a closed descriptor 0, 1 or 2 on `/dev/null` before `main`, read and
/// write, so rows written to a closed stdout would vanish with exit 0. That substitute is told
/// apart from a chosen `>/dev/null` (opened write-only by the shell) by its read-write mode,
/// read from `/proc/self/fdinfo/1`; where `/proc` is missing nothing is checked. A descriptor
/// that is really closed (dup fails) is an error too.
pub(crate) fn stdout_is_open() -> io::Result<()> {
    use std::os::{
        fd::AsFd,
        unix::fs::{FileTypeExt, MetadataExt},
    };
    let closed =
        |why: &str| io::Error::new(io::ErrorKind::BrokenPipe, format!("standard output: {why}"));
    let fd = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| closed(&e.to_string()))?;
    let (Ok(meta), Ok(null)) = (File::from(fd).metadata(), fs::metadata("/dev/null")) else {
        return Ok(());
    };
    if !meta.file_type().is_char_device() || meta.rdev() != null.rdev() {
        return Ok(());
    }
    let Ok(info) = fs::read_to_string("/proc/self/fdinfo/1") else {
        return Ok(());
    };
    // `flags:` is octal; the access mode is its low two bits (O_RDWR = 2).
    let read_write = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        .is_some_and(|flags| flags & 3 == 2);
    if read_write {
        return Err(closed("closed (the runtime put /dev/null in its place)"));
    }
    Ok(())
}

/// `e` with the path in front, its kind kept.
pub(crate) fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl Out {
    /// Resolves and checks `path` (`None` or `-`: standard output). For a regular file this
    /// creates the temporary file, so an unwritable directory fails here, before any download.
    pub(crate) fn prepare(path: Option<&Path>) -> io::Result<Self> {
        let Some(path) = path.filter(|p| p.as_os_str() != "-") else {
            stdout_is_open()?;
            return Ok(Self::Stdout);
        };
        let target = resolve_symlinks(path)?;
        match fs::metadata(&target) {
            Ok(m) if m.is_dir() => Err(at(
                path,
                io::Error::new(io::ErrorKind::IsADirectory, "is a directory"),
            )),
            Ok(m) if !m.is_file() => Ok(Self::InPlace(target)),
            Ok(_) => Self::atomic(target, path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Self::atomic(target, path),
            Err(e) => Err(at(path, e)),
        }
    }

    fn atomic(target: PathBuf, asked: &Path) -> io::Result<Self> {
        let name = target
            .file_name()
            .ok_or_else(|| {
                at(
                    asked,
                    io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
                )
            })?
            .to_string_lossy()
            .into_owned();
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut attempt = 0_u32;
        loop {
            let tmp = dir.join(format!(
                ".{name}.{}-{nanos:09}-{attempt}.tmp-tvdatafeed",
                std::process::id()
            ));
            match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(file) => {
                    return Ok(Self::Atomic {
                        target,
                        tmp,
                        file: Some(file),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => {
                    attempt += 1;
                }
                Err(e) => {
                    return Err(at(
                        asked,
                        io::Error::new(
                            e.kind(),
                            format!("cannot create a file in {}: {e}", dir.display()),
                        ),
                    ));
                }
            }
        }
    }

    /// Writes `bytes` to the destination and, for a regular file, renames it into place.
    pub(crate) fn finish(mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self {
            Self::Stdout => {
                let mut out = crate::stdout();
                out.write_all(bytes)?;
                out.flush()
            }
            Self::InPlace(path) => {
                // No `create`, no `truncate`: the file exists and is not a regular file.
                let mut f = OpenOptions::new()
                    .write(true)
                    .open(&*path)
                    .map_err(|e| at(path, e))?;
                f.write_all(bytes).map_err(|e| at(path, e))?;
                f.flush().map_err(|e| at(path, e))
            }
            Self::Atomic { target, tmp, file } => {
                let Some(mut f) = file.take() else {
                    return Err(at(tmp, io::Error::other("already written")));
                };
                f.write_all(bytes).map_err(|e| at(tmp, e))?;
                // Keep the mode of the file being replaced.
                if let Ok(m) = fs::metadata(&*target) {
                    f.set_permissions(m.permissions()).map_err(|e| at(tmp, e))?;
                }
                f.sync_all().map_err(|e| at(tmp, e))?;
                drop(f);
                fs::rename(&*tmp, &*target).map_err(|e| at(target, e))?;
                // Renamed: nothing left to clean up.
                *tmp = PathBuf::new();
                Ok(())
            }
        }
    }
}

impl Drop for Out {
    /// An output abandoned (download failed) or failed half-way leaves no temporary file.
    fn drop(&mut self) {
        if let Self::Atomic { tmp, file, .. } = self {
            drop(file.take());
            if !tmp.as_os_str().is_empty() {
                let _ = fs::remove_file(&*tmp);
            }
        }
    }
}

/// Follows `path` while it is a symlink; the result may not exist (a dangling link names the
/// file to create).
fn resolve_symlinks(path: &Path) -> io::Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_SYMLINK_HOPS {
        match fs::symlink_metadata(&current) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = fs::read_link(&current).map_err(|e| at(&current, e))?;
                current = match current.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
            }
            _ => return Ok(current),
        }
    }
    Err(at(
        path,
        io::Error::other(format!("more than {MAX_SYMLINK_HOPS} levels of symlinks")),
    ))
}
