//! Output paths, checked before any work starts: nothing a user recorded
//! or wrote is overwritten without `--force`, and no output ever names an
//! input (even with `--force`). Every command that writes a file checks
//! all its outputs here first, so a bad `--json` path fails in a
//! millisecond, not after the simulation.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use vmemsim_trace::is_same_file;

/// What the outputs of one command may not overwrite.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    /// `--force`: existing outputs may be replaced (inputs never).
    pub force: bool,
    /// The command's input files (trace, config, recorded program).
    pub inputs: Vec<PathBuf>,
}

impl Outputs {
    /// No output may replace any of `inputs`; existing files only with `force`.
    pub fn new(force: bool, inputs: impl IntoIterator<Item = PathBuf>) -> Self {
        Outputs {
            force,
            inputs: inputs.into_iter().collect(),
        }
    }

    /// Check that `path` may be written as a file: not a directory, its
    /// directory exists, not an input, and new unless `--force`. An
    /// existing character device or FIFO (`/dev/stdout`, `/dev/null`, a
    /// named pipe) is a stream, not a file a user could lose: it may be
    /// written without `--force`.
    ///
    /// # Errors
    /// A message naming the path and what is wrong with it.
    pub fn check_file(&self, path: &Path, what: &str) -> Result<()> {
        if is_stream(path) {
            return self.check_not_input(path, what);
        }
        if path.is_dir() {
            bail!(
                "{what} {}: is a directory; give a file name",
                path.display()
            );
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !parent.is_dir() {
            bail!(
                "{what} {}: directory {} does not exist",
                path.display(),
                parent.display()
            );
        }
        self.check_not_input(path, what)?;
        if path.exists() && !self.force {
            bail!(
                "{what} {} exists: refusing to overwrite it (give --force to replace it)",
                path.display()
            );
        }
        Ok(())
    }

    /// Check a `.vmt` output and its `PATH.partial` (a `.partial` left by
    /// a recording that was killed holds data `vmemsim info` can read).
    ///
    /// # Errors
    /// As [`Outputs::check_file`].
    ///
    /// A trace is written to `PATH.partial` and renamed to `PATH`, so it
    /// cannot go to a device or FIFO: the rename would replace the device
    /// node (`-o /dev/null --force` would delete `/dev/null`).
    pub fn check_trace(&self, path: &Path, what: &str) -> Result<()> {
        if is_stream(path) {
            bail!(
                "{what} {}: is a device or FIFO, not a file: a trace is written to \
                 {}.partial and renamed, which would replace it; give a file name",
                path.display(),
                path.display()
            );
        }
        self.check_file(path, what)?;
        let partial = vmemsim_trace::vmt::partial_path(path);
        self.check_not_input(&partial, what)?;
        if partial.exists() && !self.force {
            bail!(
                "{} exists (a recording or conversion that did not finish; \
                 `vmemsim info` reads it): refusing to overwrite it (give --force to replace it)",
                partial.display()
            );
        }
        Ok(())
    }

    /// Check that `dir` may receive the files `names`: it is a directory or
    /// can be created, and none of the files exists unless `--force`.
    ///
    /// # Errors
    /// A message naming the directory or the first existing file.
    pub fn check_dir(&self, dir: &Path, names: &[String], what: &str) -> Result<()> {
        if dir.exists() && !dir.is_dir() {
            bail!("{what} {}: exists and is not a directory", dir.display());
        }
        let mut existing = dir;
        while !existing.exists() {
            match existing.parent() {
                Some(p) if !p.as_os_str().is_empty() => existing = p,
                _ => break,
            }
        }
        if existing.exists() && !existing.is_dir() {
            bail!(
                "{what} {}: {} is not a directory",
                dir.display(),
                existing.display()
            );
        }
        for n in names {
            let f = dir.join(n);
            self.check_not_input(&f, what)?;
            if f.exists() && !self.force {
                bail!(
                    "{what}: {} exists: refusing to overwrite it (give --force to replace it)",
                    f.display()
                );
            }
        }
        Ok(())
    }

    fn check_not_input(&self, path: &Path, what: &str) -> Result<()> {
        if let Some(i) = self.inputs.iter().find(|i| is_same_file(i, path)) {
            bail!(
                "{what} {} is the input {}: an output never replaces an input",
                path.display(),
                i.display()
            );
        }
        Ok(())
    }

    /// Write `bytes` to `path`, which [`Outputs::check_file`] passed: a new
    /// file unless `--force` (so a file that appeared since is not lost).
    ///
    /// # Errors
    /// The file cannot be created or written.
    pub fn write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let mut o = OpenOptions::new();
        o.write(true);
        if is_stream(path) {
            // A device or FIFO: written as it is, nothing to create.
        } else if self.force {
            o.create(true).truncate(true);
        } else {
            o.create_new(true);
        }
        o.open(path)
            .and_then(|mut f| f.write_all(bytes))
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Whether `path` exists and is a character device or a FIFO (followed
/// through symbolic links, so `/dev/stdout` counts).
fn is_stream(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.file_type().is_char_device() || m.file_type().is_fifo())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("vmemsim-output-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn refuses_existing_files_directories_and_inputs() {
        let d = dir();
        let input = d.join("in.vmt");
        std::fs::write(&input, b"x").unwrap();
        let link = d.join("link.vmt");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&input, &link).unwrap();
        let o = Outputs::new(false, [input.clone()]);
        let err = |r: Result<()>| r.unwrap_err().to_string();
        assert!(err(o.check_file(&d, "-o")).ends_with("is a directory; give a file name"));
        assert!(err(o.check_file(&d.join("no/x.json"), "--json")).contains("does not exist"));
        let e = err(o.check_file(&link, "output"));
        assert!(e.contains("is the input") && e.contains("in.vmt"), "{e}");
        // Even --force never replaces an input.
        let forced = Outputs::new(true, [input.clone()]);
        assert!(err(forced.check_file(&link, "output")).contains("is the input"));
        let other = d.join("other.json");
        std::fs::write(&other, b"keep").unwrap();
        assert!(err(o.check_file(&other, "--json")).contains("give --force"));
        forced.check_file(&other, "--json").unwrap();
        // write: create_new without --force.
        assert!(o.write(&other, b"new").is_err());
        assert_eq!(std::fs::read(&other).unwrap(), b"keep");
        forced.write(&other, b"new").unwrap();
        assert_eq!(std::fs::read(&other).unwrap(), b"new");
    }

    #[test]
    fn devices_take_reports_but_never_traces() {
        let null = Path::new("/dev/null");
        if !is_stream(null) {
            eprintln!("SKIPPED: /dev/null is not a character device here");
            return;
        }
        // A report goes to a device without --force; nothing is lost.
        let o = Outputs::new(false, []);
        o.check_file(null, "--json").unwrap();
        o.write(null, b"{}").unwrap();
        // A trace would be renamed over the device node: refused, with
        // and without --force, and the device is still there.
        for force in [false, true] {
            let e = Outputs::new(force, [])
                .check_trace(null, "-o")
                .unwrap_err()
                .to_string();
            assert!(e.contains("/dev/null: is a device or FIFO"), "{e}");
        }
        assert!(is_stream(null));
    }

    #[test]
    fn a_left_partial_is_kept() {
        let d = dir();
        let out = d.join("rec.vmt");
        std::fs::write(d.join("rec.vmt.partial"), b"recorded").unwrap();
        let e = Outputs::new(false, [])
            .check_trace(&out, "-o")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rec.vmt.partial exists"), "{e}");
        Outputs::new(true, []).check_trace(&out, "-o").unwrap();
    }

    #[test]
    fn svg_directory_files() {
        let d = dir().join("svg");
        let _ = std::fs::remove_dir_all(&d);
        let o = Outputs::new(false, []);
        o.check_dir(&d.join("sub"), &["a.svg".into()], "--svg")
            .unwrap();
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("a.svg"), b"x").unwrap();
        let e = o.check_dir(&d, &["a.svg".into()], "--svg").unwrap_err();
        assert!(e.to_string().contains("a.svg exists"), "{e}");
        let file = d.join("a.svg");
        let e = o.check_dir(&file, &[], "--svg").unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }
}
