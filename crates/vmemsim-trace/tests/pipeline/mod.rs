//! Shared by `record.rs` and `record_files.rs`: record a shell pipeline and
//! check the trace in full.

use std::ffi::OsString;
use std::path::Path;

use vmemsim_trace::recorder::{record_keeping, RecordOptions, RecordSummary};
use vmemsim_trace::{vmt, ProcEvent, Record, RecordSource};

pub fn opts(output: &Path, cmd: &[&str]) -> RecordOptions {
    RecordOptions {
        output: output.to_path_buf(),
        command: cmd.iter().map(OsString::from).collect(),
        valgrind: None,
        tool: Default::default(),
    }
}

pub fn read_all(path: &Path) -> (Vec<Record>, vmt::Reader) {
    let mut r = vmt::Reader::open(path).unwrap();
    let mut all = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if r.next_batch(&mut buf, 4096).unwrap() == 0 {
            break;
        }
        all.extend_from_slice(&buf);
    }
    (all, r)
}

/// Record `sh -c 'echo hello | wc -c'` into `out` and check every record
/// reads back, in causal order, with the events and process table expected.
/// Its logs are four streams: the shell, the child that runs `echo` (a
/// builtin: no exec), the child that execs `wc` before and after its exec.
#[allow(dead_code)]
pub fn record_and_check_pipeline(out: &Path) -> RecordSummary {
    let (summary, kept) = record_keeping(&opts(out, &["sh", "-c", "echo hello | wc -c"])).unwrap();
    println!("{summary}");
    assert_eq!(summary.truncated, None);
    assert_eq!(summary.exit_code, Some(0));
    assert!(summary.processes > 1, "{summary}");
    assert!(summary.accesses > 0);
    let has = |f: &dyn Fn(&ProcEvent) -> bool| {
        kept.iter()
            .any(|r| matches!(r, Record::Event(e) if f(&e.kind)))
    };
    assert!(has(&|k| matches!(k, ProcEvent::Fork { .. })), "no fork");
    assert!(has(&|k| matches!(k, ProcEvent::Exec)), "no exec");
    assert!(
        has(&|k| matches!(k, ProcEvent::Exit { code: 0 })),
        "no exit"
    );
    assert!(has(&|k| matches!(k, ProcEvent::Mmap { .. })), "no mmap");
    assert!(has(&|k| matches!(k, ProcEvent::Brk { .. })), "no brk");

    // Causal order: every child's first record comes after its fork.
    let mut forked = std::collections::HashSet::new();
    let root = match &kept[0] {
        Record::Access(a) => a.pid,
        Record::Event(e) => e.pid,
    };
    forked.insert(root);
    for r in &kept {
        let pid = match r {
            Record::Access(a) => a.pid,
            Record::Event(e) => e.pid,
        };
        assert!(forked.contains(&pid), "record of {pid} before its fork");
        if let Record::Event(e) = r {
            if let ProcEvent::Fork { child } = e.kind {
                forked.insert(child);
            }
        }
    }

    let (read, reader) = read_all(out);
    assert_eq!(read.len(), kept.len());
    assert!(read == kept, "trace does not read back as written");
    let procs = reader.processes();
    assert_eq!(procs.len(), summary.processes);
    assert!(procs.iter().any(|p| p.pid == root && p.parent.is_none()));
    assert!(procs.iter().any(|p| p.parent == Some(root)));
    assert!(
        procs.iter().any(|p| p.command.contains("wc -c")),
        "{procs:?}"
    );
    assert!(reader.header().is_complete());
    assert_eq!(reader.header().exit_status(), Some(0));
    summary
}
