//! Format detection, opening any trace as a [`RecordSource`], [`info`] and
//! [`convert`] (re-exported at the crate root).

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::champsim::{self, Compression, Layout};
use crate::record::{ProcEvent, ProcessInfo, Record, RecordSource};
use crate::vmt::{
    self, Counts, FinishStatus, Header, WriteSummary, ACCESS_KIND_NAMES, EVENT_KIND_NAMES,
};
use crate::TraceError;

/// A trace file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// The vmemsim trace format ([`crate::vmt`]).
    Vmt,
    /// ChampSim's standard 64-byte `input_instr` records ([`crate::champsim`]).
    ChampSim,
    /// ChampSim's 96-byte CloudSuite records with ASIDs.
    ChampSimCloudSuite,
    /// Valgrind lackey `--trace-mem=yes` text output.
    Lackey,
}

impl Format {
    /// Detect the format of `path` from its content: `.vmt` by its magic
    /// bytes (a file named `.vmt` or `.vmt.partial` is a `.vmt` whatever
    /// it holds, so a damaged one reports "bad magic"); otherwise, after
    /// undoing xz or gzip compression (detected by their magic bytes), text
    /// is a Valgrind lackey log and binary data a ChampSim trace, in the
    /// layout (standard or CloudSuite) whose first records are plausible
    /// (see `sniff_champsim`). Names other than `.vmt` play no part: override
    /// a wrong guess with [`open_as`] (`--format`).
    ///
    /// # Errors
    /// [`TraceError::Io`] when the file cannot be opened, read or
    /// decompressed; [`TraceError::Malformed`] for a compressed `.vmt`.
    pub fn detect(path: &Path) -> Result<Format, TraceError> {
        Ok(Self::detect_with_compression(path)?.0)
    }

    /// [`Format::detect`], also naming the compression found.
    ///
    /// # Errors
    /// As [`Format::detect`].
    pub fn detect_with_compression(path: &Path) -> Result<(Format, Compression), TraceError> {
        let io = |e| TraceError::io(path, e);
        let mut f = std::fs::File::open(path).map_err(io)?;
        let mut magic = [0u8; 8];
        let got = vmt::read_full(&mut f, &mut magic).map_err(io)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if (got == 8 && magic == vmt::MAGIC)
            || name.ends_with(".vmt")
            || name.ends_with(".vmt.partial")
        {
            return Ok((Format::Vmt, Compression::None));
        }
        let (mut r, compression) = champsim::open_decompressed(path)?;
        let mut head = vec![0u8; SNIFF_BYTES];
        let n = vmt::read_full(&mut r, &mut head).map_err(io)?;
        head.truncate(n);
        if head.starts_with(&vmt::MAGIC) {
            return Err(TraceError::Malformed {
                path: path.to_path_buf(),
                at: "byte 0".into(),
                what: "a compressed .vmt file: decompress it first (its blocks are compressed already)".into(),
            });
        }
        Ok((sniff(&head), compression))
    }

    /// Short name ("vmt", "champsim", "champsim-cloudsuite", "lackey").
    pub fn name(self) -> &'static str {
        match self {
            Format::Vmt => "vmt",
            Format::ChampSim => "champsim",
            Format::ChampSimCloudSuite => "champsim-cloudsuite",
            Format::Lackey => "lackey",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "vmt" => Ok(Format::Vmt),
            "champsim" => Ok(Format::ChampSim),
            "champsim-cloudsuite" | "cloudsuite" => Ok(Format::ChampSimCloudSuite),
            "lackey" => Ok(Format::Lackey),
            _ => Err(format!(
                "unknown trace format {s:?}: expected vmt, champsim, champsim-cloudsuite or lackey"
            )),
        }
    }
}

/// Bytes of decompressed input [`Format::detect`] looks at.
const SNIFF_BYTES: usize = 64 << 10;

/// The format of a (decompressed) file that starts with `head`: text
/// (no NUL byte, at least 90% printable ASCII, whitespace or UTF-8 bytes)
/// is a lackey log, as is an empty file; anything else is ChampSim.
fn sniff(head: &[u8]) -> Format {
    let texty = head
        .iter()
        .filter(|&&b| b.is_ascii_graphic() || b.is_ascii_whitespace() || b >= 0x80)
        .count();
    if !head.contains(&0) && texty * 10 >= head.len() * 9 {
        Format::Lackey
    } else {
        sniff_champsim(head)
    }
}

/// Standard or CloudSuite ChampSim: the layout under which more of the
/// first records are plausible (a canonical nonzero `ip`, `is_branch` and
/// `branch_taken` 0 or 1, and for CloudSuite zero padding); standard on a tie.
fn sniff_champsim(head: &[u8]) -> Format {
    let plausible = |layout: Layout, r: &[u8]| {
        let ip = u64::from_le_bytes(r[..8].try_into().expect("8 bytes"));
        let ok = ip != 0 && ip < 1 << 47 && r[8] <= 1 && r[9] <= 1;
        ok && (layout == Layout::Standard || r[18..24].iter().chain(&r[90..96]).all(|&b| b == 0))
    };
    let score = |layout: Layout| {
        let recs = head.chunks_exact(layout.record_size()).take(256);
        let n = recs.len().max(1);
        let good = recs.filter(|r| plausible(layout, r)).count();
        good as f64 / n as f64
    };
    if head.len() >= 96 && score(Layout::CloudSuite) > score(Layout::Standard) {
        Format::ChampSimCloudSuite
    } else {
        Format::ChampSim
    }
}

/// Open a trace of any format, detected by [`Format::detect`].
///
/// # Errors
/// [`TraceError::Io`] when the file cannot be opened; a
/// [`TraceError::Malformed`] for a bad `.vmt` header or footer.
pub fn open(path: &Path) -> Result<Box<dyn RecordSource>, TraceError> {
    open_as(path, Format::detect(path)?)
}

/// Open a trace as the given format.
///
/// # Errors
/// As [`open`].
pub fn open_as(path: &Path, format: Format) -> Result<Box<dyn RecordSource>, TraceError> {
    Ok(match format {
        Format::Vmt => Box::new(vmt::Reader::open(path)?),
        Format::ChampSim => Box::new(champsim::Reader::open(path, Layout::Standard)?),
        Format::ChampSimCloudSuite => Box::new(champsim::Reader::open(path, Layout::CloudSuite)?),
        Format::Lackey => Box::new(crate::lackey::Reader::open(path)?),
    })
}

/// What [`info`] checked before it reported the counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checked {
    /// Read from a `.vmt` footer that agrees with its own block index; the
    /// blocks were not decoded (`info --verify` decodes them).
    FooterOnly,
    /// Every `.vmt` block decoded (zstd frame checksums checked) and its
    /// records counted, matching the footer kind by kind.
    EveryBlock,
    /// Every record read and counted (formats without a footer, and `.vmt`
    /// files whose footer is missing).
    EveryRecord,
}

/// A summary of a trace file, from its footer when it has one, else from
/// reading all of it. [`fmt::Display`] prints it for people.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceInfo {
    /// The file.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// True when the format was given (`--format`), false when detected.
    pub format_given: bool,
    /// Its compression (for `.vmt` files, always none: blocks are compressed inside).
    pub compression: Compression,
    /// Size of the file in bytes (compressed size for `.xz`/`.gz`).
    pub file_bytes: u64,
    /// The `.vmt` header (`None` for other formats).
    pub header: Option<Header>,
    /// The `.vmt` truncation reason, if the recording was cut short.
    pub truncation_reason: Option<String>,
    /// True when the counts come from a `.vmt` footer, false when the
    /// records were read to count them.
    pub from_footer: bool,
    /// What was checked.
    pub checked: Checked,
    /// Process table.
    pub processes: Vec<ProcessInfo>,
    /// Accesses and events by kind, and the footprint.
    pub counts: Counts,
    /// Files mapped by file-backed `mmap` events, in order of first
    /// mapping; `None` when the format cannot record them (`.vmt` version 2,
    /// ChampSim).
    pub files: Option<Vec<vmt::FileUse>>,
    /// Warnings the reader gave (for example a missing footer).
    pub warnings: Vec<String>,
}

impl TraceInfo {
    /// File bytes per access (0 without accesses).
    pub fn bytes_per_access(&self) -> f64 {
        crate::vmt::bytes_per_access(self.file_bytes, self.counts.total_accesses())
    }

    /// The recording status of a `.vmt` file, in words.
    fn status(&self, h: &Header) -> String {
        let has_footer = self.from_footer || self.checked == Checked::EveryBlock;
        if !has_footer {
            return if h.is_complete() || h.is_truncated() {
                "cut short: the header says the writer finished, but the footer is missing \
                 (the file was cut); counts from its whole blocks"
                    .to_string()
            } else {
                "unfinished: the writer did not finish (a recording killed or still \
                 running?); counts from its whole blocks"
                    .to_string()
            };
        }
        if h.is_complete() {
            match h.exit_status() {
                Some(c) => format!("complete, exit code {c}"),
                None => "complete, exit code not recorded".to_string(),
            }
        } else if h.is_truncated() {
            format!(
                "truncated: {}",
                self.truncation_reason.as_deref().unwrap_or("")
            )
        } else {
            "unfinished (the writer did not finish)".to_string()
        }
    }
}

/// `s` on one line: newlines, tabs, other control characters and
/// backslashes written as Rust-style escapes (`\n`, `\t`, `\u{1b}`, `\\`),
/// so a recorded command line with a newline in an argument stays one line.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out
}

impl fmt::Display for TraceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "file:        {} ({} bytes)",
            self.path.display(),
            self.file_bytes
        )?;
        let how = match (self.format_given, self.compression) {
            (true, Compression::None) => "as given by --format".to_string(),
            (true, c) => format!("as given by --format; {} compressed", c.name()),
            (false, Compression::None) => "detected from content".to_string(),
            (false, c) => format!("detected from content; {} compressed", c.name()),
        };
        match &self.header {
            Some(h) => {
                writeln!(
                    f,
                    "format:      {} version {} ({how})",
                    self.format, h.version
                )?;
                writeln!(f, "creator:     {}", one_line(&h.creator))?;
                writeln!(f, "status:      {}", self.status(h))?;
            }
            None => writeln!(f, "format:      {} ({how})", self.format)?,
        }
        let counted = match self.checked {
            Checked::FooterOnly => {
                "the footer only (consistent with its block index; blocks not decoded: \
                 `vmemsim info --verify` decodes and checks every block)"
            }
            Checked::EveryBlock => {
                "every block decoded and checked (zstd checksums; the footer's counts match)"
            }
            Checked::EveryRecord => "reading every record",
        };
        writeln!(f, "counts from: {counted}")?;
        writeln!(f, "processes:   {}", self.processes.len())?;
        for p in &self.processes {
            let parent = p.parent.map_or("-".to_string(), |x| x.to_string());
            writeln!(f, "  pid {:<8} parent {:<8} {}", p.pid, parent, p.command)?;
        }
        let c = &self.counts;
        write!(f, "accesses:    {}", c.total_accesses())?;
        for (name, n) in ACCESS_KIND_NAMES.iter().zip(c.accesses) {
            write!(f, "  {name} {n}")?;
        }
        writeln!(f)?;
        write!(f, "events:      {}", c.total_events())?;
        for (name, n) in EVENT_KIND_NAMES.iter().zip(c.events) {
            if n != 0 {
                write!(f, "  {name} {n}")?;
            }
        }
        writeln!(f)?;
        writeln!(
            f,
            "footprint:   {} pages of 4 KiB ({:.1} MiB)",
            c.footprint_pages,
            c.footprint_pages as f64 / 256.0
        )?;
        match &self.files {
            None => writeln!(f, "mapped files: not recorded in this format")?,
            Some(files) => {
                let mmaps: u64 = files.iter().map(|u| u.mmaps).sum();
                writeln!(
                    f,
                    "mapped files: {} ({mmaps} file-backed mmaps)",
                    files.len()
                )?;
                for u in files {
                    match u.file.fingerprint {
                        Some(p) => writeln!(
                            f,
                            "  {:<4} mmaps  {:>10} bytes  xxh3 {:016x}  {}",
                            u.mmaps,
                            p.size,
                            p.hash,
                            one_line(&u.file.path)
                        )?,
                        None => writeln!(
                            f,
                            "  {:<4} mmaps  (not fingerprinted)                   {}",
                            u.mmaps,
                            one_line(&u.file.path)
                        )?,
                    }
                }
            }
        }
        writeln!(f, "bytes/access: {:.3}", self.bytes_per_access())?;
        for w in &self.warnings {
            writeln!(f, "warning:     {w}")?;
        }
        Ok(())
    }
}

/// Counts accesses, events and distinct pages of records.
#[derive(Default)]
struct Tally {
    counts: Counts,
    pages: HashSet<(u32, u64)>,
    files: Vec<vmt::FileUse>,
}

impl Tally {
    fn add(&mut self, recs: &[Record]) {
        for r in recs {
            match r {
                Record::Access(a) => {
                    self.counts.accesses[a.kind as usize] += 1;
                    let first = a.addr >> 12;
                    self.pages.insert((a.pid, first));
                    let last = a.addr.saturating_add(u64::from(a.size.max(1)) - 1) >> 12;
                    if last != first {
                        self.pages.insert((a.pid, last));
                    }
                }
                Record::Event(e) => {
                    self.counts.events[vmt::event_index(&e.kind)] += 1;
                    if let ProcEvent::Mmap { file: Some(m), .. } = &e.kind {
                        match self.files.iter_mut().find(|u| u.file == *m.file) {
                            Some(u) => u.mmaps += 1,
                            None => self.files.push(vmt::FileUse {
                                file: (*m.file).clone(),
                                mmaps: 1,
                            }),
                        }
                    }
                }
            }
        }
    }
}

/// Summarize a trace: format, header, process table, counts by kind,
/// events by kind and footprint. A complete `.vmt` file answers from its
/// footer; other files are read to the end. Same as
/// [`info_with`]`(path, None, false)`.
///
/// # Errors
/// Any error opening or reading the trace.
pub fn info(path: &Path) -> Result<TraceInfo, TraceError> {
    info_with(path, None, false)
}

/// [`info`] with the format given (`None`: detected) and, with `verify`,
/// a `.vmt` file's blocks decoded and checked against its footer.
///
/// # Errors
/// Any error opening or reading the trace; with `verify`, a
/// [`TraceError::Malformed`] "bad footer" naming the first count that
/// differs from what the blocks hold.
pub fn info_with(
    path: &Path,
    format: Option<Format>,
    verify: bool,
) -> Result<TraceInfo, TraceError> {
    let (format, compression, format_given) = match format {
        Some(f) => (f, champsim::open_decompressed(path)?.1, true),
        None => {
            let (f, c) = Format::detect_with_compression(path)?;
            (f, c, false)
        }
    };
    let file_bytes = std::fs::metadata(path)
        .map_err(|e| TraceError::io(path, e))?
        .len();
    let mut header = None;
    let mut truncation_reason = None;
    let mut footer = None;
    let mut source: Box<dyn RecordSource> = if format == Format::Vmt {
        let r = vmt::Reader::open(path)?;
        header = Some(r.header().clone());
        if let Some(f) = r.footer() {
            if r.header().is_truncated() {
                truncation_reason = Some(f.reason.clone());
            }
            footer = Some(f.clone());
        }
        Box::new(r)
    } else {
        open_as(path, format)?
    };
    // Which formats can name mapped files at all.
    let records_files = match &header {
        Some(h) => h.version >= 3,
        None => format == Format::Lackey,
    };
    let info = |checked, processes, counts, files, warnings| TraceInfo {
        path: path.to_path_buf(),
        format,
        format_given,
        compression,
        file_bytes,
        header: header.clone(),
        truncation_reason: truncation_reason.clone(),
        from_footer: checked == Checked::FooterOnly,
        checked,
        processes,
        counts,
        files,
        warnings,
    };
    if let (Some(f), false) = (&footer, verify) {
        return Ok(info(
            Checked::FooterOnly,
            f.processes.clone(),
            f.counts.clone(),
            f.files.clone(),
            source.warnings(),
        ));
    }
    let mut tally = Tally::default();
    let mut buf = Vec::with_capacity(1 << 16);
    loop {
        buf.clear();
        if source.next_batch(&mut buf, 1 << 16)? == 0 {
            break;
        }
        tally.add(&buf);
    }
    tally.counts.footprint_pages = tally.pages.len() as u64;
    let checked = match &footer {
        Some(f) => {
            check_footer(path, &f.counts, &tally.counts)?;
            if let Some(said) = &f.files {
                if *said != tally.files {
                    return Err(TraceError::Malformed {
                        path: path.to_path_buf(),
                        at: "footer".into(),
                        what: format!(
                            "bad footer: it lists {} mapped files, the blocks map {} (or their mmap counts differ)",
                            said.len(),
                            tally.files.len()
                        ),
                    });
                }
            }
            Checked::EveryBlock
        }
        None => Checked::EveryRecord,
    };
    Ok(info(
        checked,
        source.processes().to_vec(),
        tally.counts,
        records_files.then_some(tally.files),
        source.warnings(),
    ))
}

/// The footer's `said` counts against those `found` in the blocks.
fn check_footer(path: &Path, said: &Counts, found: &Counts) -> Result<(), TraceError> {
    let names = ACCESS_KIND_NAMES.iter().chain(EVENT_KIND_NAMES.iter());
    let pairs = said
        .accesses
        .iter()
        .chain(&said.events)
        .zip(found.accesses.iter().chain(&found.events));
    let footprint = std::iter::once((
        &"footprint pages",
        (&said.footprint_pages, &found.footprint_pages),
    ));
    for (name, (s, f)) in names.zip(pairs).chain(footprint) {
        if s != f {
            return Err(TraceError::Malformed {
                path: path.to_path_buf(),
                at: "footer".into(),
                what: format!("bad footer: it says {name} {s}, the blocks hold {f}"),
            });
        }
    }
    Ok(())
}

/// Convert a trace of any readable format to `.vmt` at `output`; the
/// format is detected ([`convert_as`] with `None`).
///
/// # Errors
/// As [`convert_as`].
pub fn convert(input: &Path, output: &Path) -> Result<WriteSummary, TraceError> {
    convert_as(input, output, None)
}

/// Convert a trace in `format` (`None`: detected) to `.vmt` at `output`.
/// The exit status and truncation of a `.vmt` input carry over, and so
/// does its creator string (the recording's command line and Valgrind
/// version), with the conversion appended; a trace read with warnings (cut
/// short) is marked truncated with the warnings as reason; other inputs
/// are marked complete with no exit code.
///
/// # Errors
/// Any error reading `input` or writing `output`; an `output` that is
/// `input` (the same file by device and inode) is refused before anything
/// is written. On error the partial output (`OUTPUT.partial`) is removed.
pub fn convert_as(
    input: &Path,
    output: &Path,
    format: Option<Format>,
) -> Result<WriteSummary, TraceError> {
    if is_same_file(input, output) || is_same_file(input, &vmt::partial_path(output)) {
        return Err(TraceError::io(
            output,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "is the input {}: converting would replace it",
                    input.display()
                ),
            ),
        ));
    }
    let r = convert_inner(input, output, format);
    if r.is_err() {
        let _ = std::fs::remove_file(vmt::partial_path(output));
    }
    r
}

/// True when both paths exist and name one file (same device and inode,
/// whatever links or symlinks lead there).
pub fn is_same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

fn convert_inner(
    input: &Path,
    output: &Path,
    format: Option<Format>,
) -> Result<WriteSummary, TraceError> {
    let (format, compression) = match format {
        Some(f) => (f, Compression::None),
        None => Format::detect_with_compression(input)?,
    };
    let conversion = match compression {
        Compression::None => format!(
            "vmemsim-trace {} convert from {format}",
            env!("CARGO_PKG_VERSION")
        ),
        c => format!(
            "vmemsim-trace {} convert from {format} ({} compressed)",
            env!("CARGO_PKG_VERSION"),
            c.name()
        ),
    };
    let mut creator = conversion.clone();
    let mut status = FinishStatus::Complete { exit_code: None };
    let mut source: Box<dyn RecordSource> = if format == Format::Vmt {
        let r = vmt::Reader::open(input)?;
        let h = r.header();
        creator = format!("{}; then {conversion}", h.creator);
        if h.is_complete() {
            status = FinishStatus::Complete {
                exit_code: h.exit_status(),
            };
        } else if h.is_truncated() {
            let reason = r.footer().map(|f| f.reason.clone()).unwrap_or_default();
            status = FinishStatus::Truncated { reason };
        }
        Box::new(r)
    } else {
        open_as(input, format)?
    };
    let mut w = vmt::Writer::create(output, &creator)?;
    for p in source.processes() {
        w.add_process(p.clone());
    }
    let mut buf = Vec::with_capacity(1 << 16);
    loop {
        buf.clear();
        if source.next_batch(&mut buf, 1 << 16)? == 0 {
            break;
        }
        w.push_all(&buf)?;
    }
    // Formats that discover processes while reading know more now.
    let known: Vec<ProcessInfo> = w.processes().to_vec();
    for p in source.processes() {
        if !known.contains(p) {
            w.add_process(p.clone());
        }
    }
    let warnings = source.warnings();
    if !warnings.is_empty() && !matches!(status, FinishStatus::Truncated { .. }) {
        status = FinishStatus::Truncated {
            reason: format!("input read with warnings: {}", warnings.join("; ")),
        };
    }
    w.finish(status)
}

#[cfg(test)]
mod tests {
    #[test]
    fn creator_is_printed_on_one_line() {
        assert_eq!(
            super::one_line("sh -c 'a\nb'\tc\\d\u{1b}"),
            "sh -c 'a\\nb'\\tc\\\\d\\u{1b}"
        );
    }

    use super::*;
    use crate::record::{Access, AccessKind};

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("vmemsim-open-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn detect_by_magic_and_name() {
        let d = dir();
        let p = d.join("a.trace");
        std::fs::write(&p, b"I  04000000,4\n").unwrap();
        assert_eq!(Format::detect(&p).unwrap(), Format::Lackey);
        for n in ["x.champsim", "x.champsimtrace.xz", "X.ChampSim.gz"] {
            let p = d.join(n);
            std::fs::write(&p, [0u8; 64]).unwrap();
            assert_eq!(Format::detect(&p).unwrap(), Format::ChampSim, "{n}");
        }
        let p = d.join("named-whatever");
        std::fs::write(&p, vmt::MAGIC).unwrap();
        assert_eq!(Format::detect(&p).unwrap(), Format::Vmt);
        assert_eq!(
            "cloudsuite".parse::<Format>().unwrap(),
            Format::ChampSimCloudSuite
        );
    }

    #[test]
    fn detect_by_content_not_name() {
        let d = dir();
        // CloudSuite records: 96 bytes, plausible ips, zero padding.
        let mut cs = Vec::new();
        for i in 0..50u64 {
            let mut r = [0u8; 96];
            r[..8].copy_from_slice(&(0x40_0000 + 4 * i).to_le_bytes());
            r[56..64].copy_from_slice(&(0x10_0000 + 64 * i).to_le_bytes());
            r[88] = 3;
            cs.extend_from_slice(&r);
        }
        let p = d.join("trace.champsim");
        std::fs::write(&p, &cs).unwrap();
        assert_eq!(Format::detect(&p).unwrap(), Format::ChampSimCloudSuite);
        // Text named like ChampSim is a lackey log.
        let p = d.join("t.champsimtrace");
        std::fs::write(&p, b"I  04000000,4\n L 1ffefff000,8\n").unwrap();
        assert_eq!(Format::detect(&p).unwrap(), Format::Lackey);
        // An empty file is an (empty) lackey log, whatever its name.
        let p = d.join("empty.champsim.xz");
        std::fs::write(&p, b"").unwrap();
        assert_eq!(Format::detect(&p).unwrap(), Format::Lackey);
    }

    #[test]
    fn convert_keeps_the_creator_and_refuses_its_input() {
        let d = dir();
        let a = d.join("orig.vmt");
        let mut w = vmt::Writer::create(&a, "vmemsim record (valgrind-3.19.0): ls -l").unwrap();
        w.push(&Record::Access(Access {
            addr: 0x1000,
            pid: 1,
            size: 8,
            kind: AccessKind::Load,
        }))
        .unwrap();
        w.finish(FinishStatus::Complete { exit_code: Some(0) })
            .unwrap();
        let b = d.join("conv.vmt");
        let _ = std::fs::remove_file(&b);
        convert(&a, &b).unwrap();
        let h = vmt::Reader::open(&b).unwrap().header().clone();
        assert_eq!(
            h.creator,
            format!(
                "vmemsim record (valgrind-3.19.0): ls -l; then vmemsim-trace {} convert from vmt",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(h.exit_status(), Some(0));
        // `convert X X` used to replace X with its own conversion.
        let before = std::fs::read(&a).unwrap();
        let e = convert(&a, &a).unwrap_err().to_string();
        assert!(e.contains("is the input"), "{e}");
        assert_eq!(std::fs::read(&a).unwrap(), before);
    }

    #[test]
    fn convert_champsim_and_info() {
        let d = dir();
        let input = d.join("c.champsim");
        let mut bytes = Vec::new();
        for i in 0..100u64 {
            let mut r = [0u8; 64];
            r[..8].copy_from_slice(&(0x40_0000 + 4 * i).to_le_bytes());
            r[32..40].copy_from_slice(&(0x10_0000 + 4096 * i).to_le_bytes());
            bytes.extend_from_slice(&r);
        }
        std::fs::write(&input, &bytes).unwrap();
        let ci = info(&input).unwrap();
        assert!(!ci.from_footer);
        assert_eq!(ci.counts.accesses, [100, 100, 0, 0]);
        assert_eq!(ci.counts.footprint_pages, 101);
        let out = d.join("c.vmt");
        let s = convert(&input, &out).unwrap();
        assert_eq!(s.accesses, 200);
        let vi = info(&out).unwrap();
        assert!(vi.from_footer);
        assert_eq!(vi.counts, ci.counts);
        assert_eq!(vi.header.as_ref().unwrap().exit_status(), None);
        let text = vi.to_string();
        assert!(
            text.contains("accesses:    200  fetch 100  load 100"),
            "{text}"
        );
        assert!(text.contains("footprint:   101 pages"), "{text}");
        // And back through `open`.
        let mut src = open(&out).unwrap();
        let mut buf = Vec::new();
        src.next_batch(&mut buf, 2).unwrap();
        assert_eq!(
            buf[1],
            Record::Access(Access {
                addr: 0x10_0000,
                pid: 0,
                size: 8,
                kind: AccessKind::Load
            })
        );
    }
}
