//! Recording real programs under Valgrind lackey (skipped, with a message,
//! where Valgrind cannot run).

use std::path::{Path, PathBuf};

mod pipeline;
use pipeline::{opts, read_all, record_and_check_pipeline};
use vmemsim_trace::recorder::{record, record_keeping};
use vmemsim_trace::{vmt, ProcEvent, Record, RecordSource};

/// Set where the kernel cannot give Valgrind log pipes (seccomp user
/// notification missing or forbidden): the pipeline test then accepts log
/// files.
const NO_PIPES_ENV: &str = "VMEMSIM_TEST_NO_LOG_PIPES";

fn valgrind_runs() -> bool {
    vmemsim_trace::recorder::valgrind_runs(None)
}

fn out_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

#[test]
fn records_a_shell_pipeline_and_reads_it_back_exactly() {
    if !valgrind_runs() {
        return;
    }
    let summary = record_and_check_pipeline(&out_path("pipeline.vmt"));
    // Four streams (see the helper), all through pipes: a seccomp filter
    // turns Valgrind's log `open`s into pipes to the recorder.
    if std::env::var_os(vmemsim_trace::recorder::LOG_FILES_ENV).is_some() {
        assert_eq!((summary.log_pipes, summary.log_files), (0, 4));
    } else if std::env::var_os(NO_PIPES_ENV).is_some() {
        eprintln!("log pipes not checked ({NO_PIPES_ENV} is set)");
        assert_eq!(summary.log_pipes + summary.log_files, 4, "{summary:?}");
    } else {
        assert_eq!(
            (summary.log_pipes, summary.log_files),
            (4, 0),
            "logs did not come through pipes: set {NO_PIPES_ENV}=1 where \
             seccomp user notification (Linux >= 5.14) is not available"
        );
    }
}

#[test]
fn failing_and_crashing_programs_still_give_complete_traces() {
    if !valgrind_runs() {
        return;
    }
    let out = out_path("exit3.vmt");
    let s = record(&opts(&out, &["sh", "-c", "exit 3"])).unwrap();
    assert_eq!(s.exit_code, Some(3));
    assert_eq!(s.truncated, None);
    let (read, _) = read_all(&out);
    assert!(read
        .iter()
        .any(|r| matches!(r, Record::Event(e) if e.kind == ProcEvent::Exit { code: 3 })));

    let out = out_path("segv.vmt");
    let s = record(&opts(&out, &["sh", "-c", "kill -SEGV $$"])).unwrap();
    assert_eq!(s.exit_code, Some(128 + 11));
    let (read, _) = read_all(&out);
    assert!(read
        .iter()
        .any(|r| matches!(r, Record::Event(e) if e.kind == ProcEvent::Exit { code: 139 })));
}

#[test]
fn missing_valgrind_says_how_to_install_it() {
    let mut o = opts(&out_path("never.vmt"), &["true"]);
    o.valgrind = Some(PathBuf::from("/nonexistent/valgrind"));
    let e = record(&o).unwrap_err().to_string();
    assert!(e.contains("apt-get install valgrind"), "{e}");
    assert!(!out_path("never.vmt").exists());
}

#[test]
fn sample_recordings_in_tests_data_decode_completely() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    for name in ["sh-echo-wc.vmt", "sh-ls-wc.vmt", "sh-sort-uniq.vmt"] {
        let (read, r) = read_all(&data.join(name));
        assert!(r.header().is_complete(), "{name}");
        assert!(read.len() > 100_000, "{name}");
        assert!(r.processes().len() >= 3, "{name}");
    }
}

#[test]
fn committed_version_2_recordings_read_with_no_mapped_files() {
    // tests/data holds version 2 files (recorded before mmap events named
    // files); they must stay readable and are never rewritten.
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    let (read, r) = read_all(&data.join("sh-echo-wc.vmt"));
    assert_eq!(r.header().version, 2);
    assert_eq!(r.footer().unwrap().files, None);
    let mmaps = read
        .iter()
        .filter(|x| matches!(x, Record::Event(e) if matches!(e.kind, ProcEvent::Mmap { .. })))
        .count();
    assert!(mmaps > 0);
    assert!(read.iter().all(
        |x| !matches!(x, Record::Event(e) if matches!(e.kind, ProcEvent::Mmap { file: Some(_), .. }))
    ));
    let info = vmemsim_trace::info(&data.join("sh-echo-wc.vmt")).unwrap();
    assert_eq!(info.files, None);
    assert!(info
        .to_string()
        .contains("mapped files: not recorded in this format"));
}

#[test]
fn a_recording_names_the_shared_libraries_it_maps() {
    if !valgrind_runs() {
        return;
    }
    let out = out_path("files.vmt");
    let (_, kept) = record_keeping(&opts(&out, &["sh", "-c", "true"])).unwrap();
    let mapped: Vec<_> = kept
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => match &e.kind {
                ProcEvent::Mmap { file: Some(m), .. } => Some(m.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    // The dynamic loader maps libc (text, rodata, data: several mmaps of
    // the same file at different offsets) from a descriptor it opened.
    let libc: Vec<_> = mapped
        .iter()
        .filter(|m| m.file.path.contains("libc.so"))
        .collect();
    assert!(libc.len() >= 2, "{mapped:?}");
    assert!(libc.iter().any(|m| m.offset > 0), "{libc:?}");
    let fp = libc[0].file.fingerprint.expect("libc fingerprinted");
    // The fingerprint is the file's size and XXH3-64 of its bytes.
    let bytes = std::fs::read(&libc[0].file.path).unwrap();
    assert_eq!(fp.size, bytes.len() as u64);
    assert_eq!(fp.hash, xxhash_rust::xxh3::xxh3_64(&bytes));
    // Written and read back; `info` lists the file from the footer.
    let (read, r) = read_all(&out);
    assert_eq!(read, kept);
    assert_eq!(r.header().version, vmt::VERSION);
    let info = vmemsim_trace::info(&out).unwrap();
    let files = info.files.clone().unwrap();
    let u = files.iter().find(|u| u.file == *libc[0].file).unwrap();
    assert_eq!(u.mmaps, libc.len() as u64);
    assert!(info.to_string().contains(&format!("{:016x}", fp.hash)));
    assert!(vmemsim_trace::info_with(&out, None, true).is_ok());
}
