//! Format detection, opening any trace as a [`RecordSource`], [`info`] and
//! [`convert`] (re-exported at the crate root).

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::champsim::{self, Layout};
use crate::record::{ProcessInfo, Record, RecordSource};
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
    /// Detect the format of `path`: `.vmt` by its magic bytes (or a `.vmt`
    /// / `.vmt.partial` name, so a damaged file reports "bad magic");
    /// ChampSim by a name ending in `.champsim` or `.champsimtrace`,
    /// optionally followed by `.xz` or `.gz`; lackey text otherwise.
    /// CloudSuite traces cannot be told apart: use [`open_as`].
    ///
    /// # Errors
    /// [`TraceError::Io`] when the file cannot be opened or read.
    pub fn detect(path: &Path) -> Result<Format, TraceError> {
        let io = |e| TraceError::io(path, e);
        let mut f = std::fs::File::open(path).map_err(io)?;
        let mut head = [0u8; 8];
        let got = vmt::read_full(&mut f, &mut head).map_err(io)?;
        if got == 8 && head == vmt::MAGIC {
            return Ok(Format::Vmt);
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if name.ends_with(".vmt") || name.ends_with(".vmt.partial") {
            return Ok(Format::Vmt);
        }
        let stem = name
            .strip_suffix(".xz")
            .or_else(|| name.strip_suffix(".gz"))
            .unwrap_or(&name);
        if stem.ends_with(".champsim") || stem.ends_with(".champsimtrace") {
            return Ok(Format::ChampSim);
        }
        Ok(Format::Lackey)
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

/// A summary of a trace file, from its footer when it has one, else from
/// reading all of it. [`fmt::Display`] prints it for people.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceInfo {
    /// The file.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// Size of the file in bytes (compressed size for `.xz`/`.gz`).
    pub file_bytes: u64,
    /// The `.vmt` header (`None` for other formats).
    pub header: Option<Header>,
    /// The `.vmt` truncation reason, if the recording was cut short.
    pub truncation_reason: Option<String>,
    /// True when the counts come from a `.vmt` footer, false when the
    /// records were read to count them.
    pub from_footer: bool,
    /// Process table.
    pub processes: Vec<ProcessInfo>,
    /// Accesses and events by kind, and the footprint.
    pub counts: Counts,
    /// Warnings the reader gave (for example a missing footer).
    pub warnings: Vec<String>,
}

impl TraceInfo {
    /// File bytes per access (0 without accesses).
    pub fn bytes_per_access(&self) -> f64 {
        let n = self.counts.total_accesses();
        if n == 0 {
            0.0
        } else {
            self.file_bytes as f64 / n as f64
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
        match &self.header {
            Some(h) => {
                writeln!(f, "format:      {} version {}", self.format, h.version)?;
                writeln!(f, "creator:     {}", one_line(&h.creator))?;
                let status = if h.is_complete() {
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
                };
                writeln!(f, "status:      {status}")?;
            }
            None => writeln!(f, "format:      {}", self.format)?,
        }
        writeln!(
            f,
            "counts from: {}",
            if self.from_footer {
                "footer"
            } else {
                "reading every record"
            }
        )?;
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
                Record::Event(e) => self.counts.events[vmt::event_index(&e.kind)] += 1,
            }
        }
    }
}

/// Summarize a trace: format, header, process table, counts by kind,
/// events by kind and footprint. A complete `.vmt` file answers from its
/// footer; other files are read to the end.
///
/// # Errors
/// Any error opening or reading the trace.
pub fn info(path: &Path) -> Result<TraceInfo, TraceError> {
    let format = Format::detect(path)?;
    let file_bytes = std::fs::metadata(path)
        .map_err(|e| TraceError::io(path, e))?
        .len();
    let mut header = None;
    let mut truncation_reason = None;
    let mut source: Box<dyn RecordSource> = if format == Format::Vmt {
        let r = vmt::Reader::open(path)?;
        header = Some(r.header().clone());
        if let Some(f) = r.footer() {
            if r.header().is_truncated() {
                truncation_reason = Some(f.reason.clone());
            }
            return Ok(TraceInfo {
                path: path.to_path_buf(),
                format,
                file_bytes,
                header,
                truncation_reason,
                from_footer: true,
                processes: f.processes.clone(),
                counts: f.counts.clone(),
                warnings: r.warnings(),
            });
        }
        Box::new(r)
    } else {
        open_as(path, format)?
    };
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
    Ok(TraceInfo {
        path: path.to_path_buf(),
        format,
        file_bytes,
        header,
        truncation_reason,
        from_footer: false,
        processes: source.processes().to_vec(),
        counts: tally.counts,
        warnings: source.warnings(),
    })
}

/// Convert a trace of any readable format to `.vmt` at `output`. The exit
/// status and truncation of a `.vmt` input carry over; a trace read with
/// warnings (cut short) is marked truncated with the warnings as reason;
/// other inputs are marked complete with no exit code.
///
/// # Errors
/// Any error reading `input` or writing `output`; the partial output
/// (`OUTPUT.partial`) is removed.
pub fn convert(input: &Path, output: &Path) -> Result<WriteSummary, TraceError> {
    let r = convert_inner(input, output);
    if r.is_err() {
        let _ = std::fs::remove_file(vmt::partial_path(output));
    }
    r
}

fn convert_inner(input: &Path, output: &Path) -> Result<WriteSummary, TraceError> {
    let format = Format::detect(input)?;
    let mut status = FinishStatus::Complete { exit_code: None };
    let mut source: Box<dyn RecordSource> = if format == Format::Vmt {
        let r = vmt::Reader::open(input)?;
        let h = r.header();
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
    let creator = format!(
        "vmemsim-trace {} convert from {format}",
        env!("CARGO_PKG_VERSION")
    );
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
        for r in &buf {
            w.push(r)?;
        }
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
