//! The vmemsim Valgrind tool against lackey: the same deterministic
//! programs recorded with both give the same records (every process's
//! access stream and events, and the process table); only the creator
//! string differs. Skipped, with a message, where Valgrind cannot run or
//! the tool cannot be built.
//!
//! One test function in its own binary: it sets `VALGRIND_LIB` for the
//! lackey runs (the tool's directory, which links lackey too), so the
//! recorded program has the same environment, and so the same stack
//! addresses, under both tools.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use vmemsim_trace::recorder::{record_keeping, RecordOptions, RecordTool};
use vmemsim_trace::{vmt, ProcEvent, Record, RecordSource};

fn out_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// One process of a recording, named by its place in the process tree
/// (`0` the root, `0.1` its first forked child...), since pids differ
/// between runs.
#[derive(Debug, PartialEq)]
struct Proc {
    parent: Option<String>,
    command: String,
    /// The process's records in order: an access as its kind and size with
    /// its address, an event as its text (fork children by name).
    records: Vec<(String, Option<u64>)>,
}

/// A recording as per-process streams (the interleaving of processes in
/// the trace depends on timing; each process's own order does not).
fn by_process(records: &[Record], table: &[vmemsim_trace::ProcessInfo]) -> HashMap<String, Proc> {
    let root = match &records[0] {
        Record::Access(a) => a.pid,
        Record::Event(e) => e.pid,
    };
    let mut names: HashMap<u32, String> = HashMap::from([(root, "0".to_string())]);
    let mut forks: HashMap<u32, u32> = HashMap::new();
    let mut streams: HashMap<u32, Vec<(String, Option<u64>)>> = HashMap::new();
    for r in records {
        let (pid, text) = match r {
            Record::Access(a) => (a.pid, (format!("{:?},{}", a.kind, a.size), Some(a.addr))),
            Record::Event(e) => {
                let text = match &e.kind {
                    ProcEvent::Fork { child } => {
                        let n = forks.entry(e.pid).or_insert(0);
                        *n += 1;
                        let parent = names
                            .get(&e.pid)
                            .unwrap_or_else(|| panic!("fork by unnamed pid {}", e.pid));
                        let name = format!("{parent}.{n}");
                        names.insert(*child, name.clone());
                        format!("Fork {name}")
                    }
                    other => format!("{other:?}"),
                };
                (e.pid, (text, None))
            }
        };
        streams.entry(pid).or_default().push(text);
    }
    let mut out = HashMap::new();
    for (pid, recs) in streams {
        let name = names
            .get(&pid)
            .unwrap_or_else(|| panic!("records of pid {pid}, never forked"))
            .clone();
        let info = table
            .iter()
            .find(|p| p.pid == pid)
            .unwrap_or_else(|| panic!("pid {pid} not in the process table"));
        let parent = info.parent.map(|p| names[&p].clone());
        out.insert(
            name,
            Proc {
                parent,
                command: info.command.clone(),
                records: recs,
            },
        );
    }
    out
}

fn record_with(tool: RecordTool, name: &str, cmd: &[&str]) -> (HashMap<String, Proc>, String) {
    let out = out_path(name);
    let opts = RecordOptions {
        output: out.clone(),
        command: cmd.iter().map(OsString::from).collect(),
        valgrind: None,
        tool,
    };
    let (summary, kept) = record_keeping(&opts).unwrap();
    assert_eq!(summary.tool, tool, "{summary:?}");
    assert_eq!(summary.truncated, None, "{summary:?}");
    let mut reader = vmt::Reader::open(&out).unwrap();
    let mut back = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.next_batch(&mut buf, 1 << 16).unwrap() == 0 {
            break;
        }
        back.extend_from_slice(&buf);
    }
    assert_eq!(back, kept, "the trace does not read back as written");
    let creator = reader.header().creator.clone();
    (by_process(&kept, reader.processes()), creator)
}

/// Record `cmd` with lackey twice and with the vmemsim tool once; the
/// vmemsim recording must equal the lackey ones record for record: the
/// same processes, events, access kinds and sizes everywhere, and the same
/// addresses wherever the two lackey runs agree. (They do not quite: the
/// dynamic loader indexes a table on its stack with the bytes of the
/// kernel's `AT_RANDOM`, which Valgrind passes on, so a few loads move
/// from run to run whichever tool records; their number is reported and
/// bounded.)
fn compare(name: &str, cmd: &[&str], min_processes: usize, min_records: usize) {
    let (vm, vm_creator) = record_with(RecordTool::Vmemsim, &format!("{name}-vmemsim.vmt"), cmd);
    let (lk, lk_creator) = record_with(RecordTool::Lackey, &format!("{name}-lackey.vmt"), cmd);
    let (lk2, _) = record_with(RecordTool::Lackey, &format!("{name}-lackey2.vmt"), cmd);
    assert!(vm_creator.contains("--tool=vmemsim"), "{vm_creator}");
    assert!(lk_creator.contains("--tool=lackey"), "{lk_creator}");
    assert_eq!(
        vm_creator.replace("--tool=vmemsim", "--tool=lackey"),
        lk_creator
    );
    assert!(vm.len() >= min_processes, "{name}: {} processes", vm.len());
    let records: usize = vm.values().map(|p| p.records.len()).sum();
    assert!(records >= min_records, "{name}: {records} records");
    let mut names: Vec<&String> = lk.keys().collect();
    names.sort();
    let mut vm_names: Vec<&String> = vm.keys().collect();
    vm_names.sort();
    let mut lk2_names: Vec<&String> = lk2.keys().collect();
    lk2_names.sort();
    assert_eq!(vm_names, names, "{name}: processes differ");
    assert_eq!(
        lk2_names, names,
        "{name}: processes differ between lackey runs"
    );
    let mut moved = 0usize;
    for n in names {
        let (a, b, c) = (&vm[n], &lk[n], &lk2[n]);
        assert_eq!(
            (&a.parent, &a.command),
            (&b.parent, &b.command),
            "{name}: process {n}"
        );
        assert_eq!(
            (a.records.len(), b.records.len()),
            (c.records.len(), c.records.len()),
            "{name}: process {n}: record counts (vmemsim, lackey) vs the second lackey run"
        );
        for (i, ((x, y), z)) in a.records.iter().zip(&b.records).zip(&c.records).enumerate() {
            let same_run_to_run = y == z;
            if same_run_to_run {
                if x != y {
                    let lo = i.saturating_sub(3);
                    let hi = (i + 3).min(a.records.len());
                    panic!(
                        "{name}: process {n}: record {i} differs (both lackey runs agree):\n\
                         vmemsim: {:x?}\nlackey:  {:x?}",
                        &a.records[lo..hi],
                        &b.records[lo..hi],
                    );
                }
            } else {
                // Only an address may move, never what the record is.
                assert_eq!(
                    &y.0, &z.0,
                    "{name}: process {n}: record {i}: lackey runs differ"
                );
                assert_eq!(
                    &x.0, &y.0,
                    "{name}: process {n}: record {i}: {x:?} vs {y:?}"
                );
                moved += 1;
            }
        }
    }
    println!(
        "{name}: {} processes, {records} records, identical but for {moved} addresses \
         that also move between lackey runs",
        vm.len()
    );
    assert!(moved <= 64 * vm.len(), "{name}: {moved} moving addresses");
}

/// [`compare`], up to three times. A program is not always deterministic
/// from run to run even when two lackey runs agree: the shell of
/// `pipeline` waits for two children whose order of exit depends on the
/// host's scheduling, and under load one vmemsim run once retired one
/// record more in the shell than both lackey runs (367 459 against
/// 367 458). A difference the tool causes shows in every attempt.
fn compare_retrying(name: &str, cmd: &[&str], min_processes: usize, min_records: usize) {
    for attempt in 1..=3 {
        let run = std::panic::catch_unwind(|| compare(name, cmd, min_processes, min_records));
        match run {
            Ok(()) => return,
            Err(_) if attempt < 3 => {
                eprintln!("{name}: attempt {attempt} differed (message above); recording again")
            }
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}

#[test]
fn vmemsim_tool_records_exactly_what_lackey_records() {
    if !vmemsim_trace::recorder::valgrind_runs(None) {
        return;
    }
    let lib = match vmemsim_trace::recorder::vmemsim_tool_dir(None) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("SKIPPED: the vmemsim Valgrind tool cannot be built here: {e}");
            return;
        }
    };
    // The lackey runs inherit it (the vmemsim runs set it themselves).
    std::env::set_var("VALGRIND_LIB", &lib);

    let input = out_path("tool-gzip-input");
    let data: Vec<u8> = (0..16384u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 % 17 + b'a')
        .collect();
    std::fs::write(&input, data).unwrap();
    let input = input.to_str().unwrap().to_string();

    compare_retrying("true", &["/bin/true"], 1, 50_000);
    // A fork whose child execs (and one that runs a builtin).
    compare_retrying(
        "pipeline",
        &["sh", "-c", "echo a | wc -c > /dev/null"],
        3,
        200_000,
    );
    let gzip = format!("gzip -c {input} > /dev/null");
    compare_retrying("gzip", &["sh", "-c", &gzip], 1, 1_000_000);
    // Not compared: `sh -c 'kill -TERM $$'` (a death by a signal): the
    // shell formats its pid, so a few load addresses depend on the pid's
    // digits and differ between any two runs (the signal tests in
    // record_signal.rs and record_cli.rs cover the tool's exit on signals).
}
