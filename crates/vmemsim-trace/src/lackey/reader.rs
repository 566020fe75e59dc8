//! [`Reader`]: a lackey log file (or any reader) as a [`RecordSource`], and
//! [`malformed`], the error for a line that does not parse.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::LineParser;
use crate::{ProcessInfo, Record, RecordSource, TraceError};

/// Reads a lackey log (one process) from a file or any buffered reader.
pub struct Reader {
    path: PathBuf,
    src: Box<dyn BufRead>,
    line: Vec<u8>,
    line_no: u64,
    parser: LineParser,
    /// Records produced beyond the caller's `max`, handed out first next time.
    overflow: Vec<Record>,
    processes: Vec<ProcessInfo>,
    done: bool,
}

impl Reader {
    /// Open a lackey log file, plain or xz / gzip compressed (detected
    /// from its first bytes); records carry the pid of its `==PID==` lines.
    ///
    /// # Errors
    /// [`TraceError::Io`] when the file cannot be opened.
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        let (input, _) = crate::champsim::open_decompressed(path)?;
        Ok(Self::new(
            path.to_path_buf(),
            Box::new(BufReader::with_capacity(1 << 18, input)),
            None,
        ))
    }

    /// Read a lackey log from `r` (for example stdin); `name` is used in
    /// error messages. Records carry the pid of its `==PID==` lines.
    pub fn from_reader(name: &str, r: impl BufRead + 'static) -> Self {
        Self::new(PathBuf::from(name), Box::new(r), None)
    }

    /// Like [`from_reader`](Self::from_reader), but every record carries `pid`.
    pub fn with_pid(name: &str, r: impl BufRead + 'static, pid: u32) -> Self {
        Self::new(PathBuf::from(name), Box::new(r), Some(pid))
    }

    fn new(path: PathBuf, src: Box<dyn BufRead>, pid: Option<u32>) -> Self {
        Reader {
            path,
            src,
            line: Vec::with_capacity(256),
            line_no: 0,
            parser: LineParser::new(pid),
            overflow: Vec::new(),
            processes: Vec::new(),
            done: false,
        }
    }

    fn update_processes(&mut self) {
        if self.parser.has_preamble() {
            self.processes.clear();
            self.processes.push(self.parser.process_info());
        }
    }
}

impl RecordSource for Reader {
    fn next_batch(&mut self, buf: &mut Vec<Record>, max: usize) -> Result<usize, TraceError> {
        let start = buf.len();
        let target = start + max;
        while buf.len() < target {
            if !self.overflow.is_empty() {
                let take = (target - buf.len()).min(self.overflow.len());
                buf.extend(self.overflow.drain(..take));
                continue;
            }
            if self.done {
                break;
            }
            // Plain access lines straight from the reader's buffer (one
            // record each, so `target` is never passed).
            let avail = self
                .src
                .fill_buf()
                .map_err(|e| TraceError::io(&self.path, e))?;
            let (used, lines) = self.parser.parse_access_lines(avail, buf, target);
            if used > 0 {
                self.src.consume(used);
                self.line_no += lines;
                continue;
            }
            self.line.clear();
            let n = self
                .src
                .read_until(b'\n', &mut self.line)
                .map_err(|e| TraceError::io(&self.path, e))?;
            if n == 0 {
                self.done = true;
                self.parser.finish(&mut self.overflow);
                continue;
            }
            self.line_no += 1;
            let line = match self.line.last() {
                Some(b'\n') => &self.line[..self.line.len() - 1],
                _ => &self.line[..],
            };
            let out = if target - buf.len() >= 2 {
                &mut *buf
            } else {
                &mut self.overflow
            };
            if let Err(what) = self.parser.parse_line(line, out) {
                return Err(malformed(&self.path, self.line_no, what, line));
            }
            if line.first() == Some(&b'=') {
                self.update_processes();
            }
        }
        Ok(buf.len() - start)
    }

    fn processes(&self) -> &[ProcessInfo] {
        &self.processes
    }
}

/// The error for a line that does not parse: file, line number, what was
/// expected and (the start of) what was found.
pub fn malformed(path: &Path, line_no: u64, what: &str, line: &[u8]) -> TraceError {
    let shown = &line[..line.len().min(80)];
    TraceError::Malformed {
        path: path.to_path_buf(),
        at: format!("line {line_no}"),
        what: format!("{what}; found {:?}", String::from_utf8_lossy(shown)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Access, AccessKind};

    #[test]
    fn preamble_sets_pid_and_process() {
        let text = "==42== Lackey, an example Valgrind tool\n==42== Command: sh -c echo\\ hi\n==42== Parent PID: 41\n==42== \nI  0401ab70,3\n";
        let mut r = Reader::from_reader("<test>", std::io::Cursor::new(text.as_bytes().to_vec()));
        let mut buf = Vec::new();
        assert_eq!(r.next_batch(&mut buf, 100).unwrap(), 1);
        assert_eq!(
            buf,
            vec![Record::Access(Access {
                addr: 0x401ab70,
                pid: 42,
                size: 3,
                kind: AccessKind::Fetch
            })]
        );
        assert_eq!(
            r.processes(),
            &[ProcessInfo {
                pid: 42,
                parent: Some(41),
                command: "sh -c echo\\ hi".into()
            }]
        );
        buf.clear();
        assert_eq!(r.next_batch(&mut buf, 100).unwrap(), 0);
    }

    #[test]
    fn malformed_lines_name_the_line() {
        for bad in [
            "I  zz,3",
            " L 1000",
            " S 1000,99999",
            "hello",
            " Q 10,1",
            "SYSCALL[1](2)",
        ] {
            let text = format!("I  1000,4\n\n{bad}\n");
            let mut r = Reader::from_reader("trace.txt", std::io::Cursor::new(text.into_bytes()));
            let mut buf = Vec::new();
            let e = r.next_batch(&mut buf, 100).unwrap_err().to_string();
            assert!(e.starts_with("trace.txt: line 3: expected"), "{bad}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn small_batches_keep_every_record() {
        let text = "SYSCALL[1,1](25) sys_mremap ( 0x1000, 4096, 8192, 0x1 ) --> Success(0x9000)\nI  10,1\n";
        let mut r = Reader::with_pid("t", std::io::Cursor::new(text.as_bytes().to_vec()), 1);
        let mut all = Vec::new();
        loop {
            let mut buf = Vec::new();
            if r.next_batch(&mut buf, 1).unwrap() == 0 {
                break;
            }
            assert_eq!(buf.len(), 1);
            all.extend(buf);
        }
        assert_eq!(all.len(), 3);
    }
}
