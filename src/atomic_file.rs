//! Files written whole or not at all: checkpoints, downloads and pictures.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `path` whole or not at all. `write` fills a temporary file unique to this call, in
/// `path`'s directory (so the final rename is atomic, and concurrent writers, even of files
/// whose names differ only in extension, never share one); it is synced and renamed over
/// `path`. On any error the temporary file is removed and `path` is left as it was. `write`
/// gets the temporary file's path to name in its own errors.
pub(crate) fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut File, &Path) -> Result<()>,
) -> Result<()> {
    let name = path.file_name().ok_or_else(|| {
        Error::invalid(
            "write",
            format!("`{}` does not name a file", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    // Dropped on every early return below, which deletes it.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    let tmp_path = tmp.path().to_path_buf();
    write(tmp.as_file_mut(), &tmp_path)?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(&tmp_path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_failed_write_leaves_nothing_and_the_old_file_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        std::fs::write(&path, b"old").unwrap();
        let err = write_atomic(&path, |f, _| {
            f.write_all(b"half").unwrap();
            Err(Error::invalid("test", "the writer failed"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("the writer failed"));
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "the temporary file was removed");
        write_atomic(&path, |f, tmp| {
            f.write_all(b"new").map_err(|e| Error::io(tmp, e))
        })
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }
}
