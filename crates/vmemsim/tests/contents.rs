//! Page contents (guest/content.rs): the rules give exact content ids, the
//! same work in two VMs gives the same contents frame for frame, and a
//! mode changes cost, never contents.

mod common;

use std::path::Path;
use std::sync::Arc;

use vmemsim::guest::content::{self, after_store, file_key, file_page, ContentId, ZERO};
use vmemsim::guest::softwalk;
use vmemsim::host::config::HostConfig;
use vmemsim::hostsim::HostSim;
use vmemsim::sim::ModeKind;
use vmemsim_trace::{AccessKind, FileId, Fingerprint, MappedFile, ProcEvent, Record};

use common::{acc, collect, content_host, ev};

fn recording(name: &str) -> Vec<Record> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(name);
    collect(vmemsim_trace::open(&p).unwrap().as_mut())
}

/// Content of the page at `va` of live process `pid` of VM `vm`.
fn content_at(sim: &HostSim, vm: usize, pid: u32, va: u64) -> ContentId {
    let g = sim.guest(vm);
    let p = g.process(pid).expect("process alive");
    let m = softwalk::translate(&g.mem, p.root, g.levels(), va).expect("mapped");
    g.contents().unwrap().get(m.gpfn)
}

/// Every frame's content of VM `vm`.
fn all_contents(sim: &HostSim, vm: usize) -> Vec<ContentId> {
    let c = sim.guest(vm).contents().unwrap();
    (0..c.frames()).map(|f| c.get(f)).collect()
}

const A: u64 = 0x7000_0000;
const LIB: u64 = 0x5000_0000;

fn lib() -> MappedFile {
    MappedFile {
        file: Arc::new(FileId {
            path: "/lib/libx.so".into(),
            fingerprint: Some(Fingerprint {
                size: 1 << 20,
                hash: 0xabcd,
            }),
        }),
        offset: 0x3000,
    }
}

fn mmap(addr: u64, len: u64, prot: u32, file: Option<MappedFile>) -> ProcEvent {
    ProcEvent::Mmap {
        addr,
        len,
        prot,
        flags: if file.is_some() { 2 } else { 0x22 },
        file,
    }
}

/// The rules, exactly: a demand-zero page is ZERO; a file page is
/// file_page(key, file offset) in every process; stores chain
/// after_store with the process's own ordinal; a copy-on-write copy
/// starts from its source's content.
#[test]
fn contents_follow_the_rules_exactly_in_every_mode() {
    let key = file_key(&lib().file);
    let recs = vec![
        ev(1, mmap(A, 1 << 20, 3, None)),
        ev(1, mmap(LIB, 1 << 16, 5, Some(lib()))),
        acc(1, AccessKind::Load, A),           // zero page
        acc(1, AccessKind::Store, A + 0x1010), // store 1 of pid 1
        acc(1, AccessKind::Fetch, LIB + 0x2000),
        ev(1, ProcEvent::Fork { child: 2 }),
        acc(2, AccessKind::Load, A + 0x1000),  // shared, no copy
        acc(2, AccessKind::Store, A + 0x1020), // COW copy, then store 1 of pid 2
        // pid 2 maps the same file elsewhere, 0x1000 further into it.
        ev(
            2,
            mmap(
                LIB + (1 << 24),
                1 << 16,
                5,
                Some(MappedFile {
                    offset: 0x4000,
                    ..lib()
                }),
            ),
        ),
        acc(2, AccessKind::Fetch, LIB + (1 << 24) + 0x1000),
    ];
    let s1 = after_store(ZERO, 0x10, 8, 1);
    for mode in ModeKind::ALL {
        let mut sim = content_host(mode, std::slice::from_ref(&recs), 1024).checked();
        sim.run(&mut |_| {}).unwrap();
        assert_eq!(content_at(&sim, 0, 1, A), ZERO, "{mode:?}");
        assert_eq!(content_at(&sim, 0, 1, A + 0x1000), s1, "{mode:?}");
        // File offset of LIB + 0x2000: 0x3000 + 0x2000.
        let lib_page = file_page(key, 0x5000);
        assert_eq!(content_at(&sim, 0, 1, LIB + 0x2000), lib_page, "{mode:?}");
        // The same file page through pid 2's mapping: 0x4000 + 0x1000.
        assert_eq!(
            content_at(&sim, 0, 2, LIB + (1 << 24) + 0x1000),
            lib_page,
            "{mode:?}"
        );
        // pid 2's copy: pid 1's content, then pid 2's first store.
        assert_eq!(
            content_at(&sim, 0, 2, A + 0x1000),
            after_store(s1, 0x20, 8, 1),
            "{mode:?}"
        );
        assert_ne!(lib_page, content::PAGE_TABLE);
    }
}

/// The same real recording (`.vmt` version 3, mmap events naming libc) in
/// two VMs on one host gives the same content in every guest frame, in
/// every mode and equal to native's; a different recording gives
/// different contents. (Native VMs run on hosts of their own: two native
/// VMs on one host share VPID 0 and so each other's TLB entries, a bug of
/// the host model reported separately; the oracle catches it.)
#[test]
fn same_work_same_contents_across_vms_and_modes() {
    let same = recording("sh-echo-wc-files.vmt");
    let other = recording("sh-sort-uniq.vmt");
    let libc = same
        .iter()
        .find_map(|r| match r {
            Record::Event(e) => match &e.kind {
                ProcEvent::Mmap { file: Some(m), .. } if m.file.path.contains("libc.so") => {
                    Some((file_key(&m.file), m.file.fingerprint.unwrap().size))
                }
                _ => None,
            },
            _ => None,
        })
        .expect("the recording maps libc");
    let mut native: Option<Vec<ContentId>> = None;
    for mode in ModeKind::ALL {
        let runs: Vec<Vec<ContentId>> = if !mode.is_virtualized() {
            [&same, &same, &other]
                .iter()
                .map(|r| {
                    let mut sim = content_host(mode, &[(*r).clone()], 1024).checked();
                    sim.run(&mut |_| {}).unwrap();
                    all_contents(&sim, 0)
                })
                .collect()
        } else {
            let mut sim =
                content_host(mode, &[same.clone(), same.clone(), other.clone()], 1024).checked();
            sim.run(&mut |_| {}).unwrap();
            (0..3).map(|i| all_contents(&sim, i)).collect()
        };
        let a = &runs[0];
        let differ = |b: &[ContentId]| a.iter().zip(b).filter(|(x, y)| x != y).count();
        assert_eq!(differ(&runs[1]), 0, "{mode:?}: identical VMs differ");
        assert!(
            differ(&runs[2]) > 100,
            "{mode:?}: different work, same contents"
        );
        // Stores really changed contents, and file pages came in.
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(
            distinct.len() > 100,
            "{mode:?}: {} contents",
            distinct.len()
        );
        // libc's pages (file_page of its fingerprint, any offset) came in,
        // some in two frames: sh and wc each faulted in the same page of
        // libc (the guest model has no page cache).
        let libc_pages: std::collections::HashSet<ContentId> = (0..libc.1 >> 12)
            .map(|p| file_page(libc.0, p << 12))
            .collect();
        let mut seen = std::collections::HashMap::new();
        for c in a.iter().filter(|c| libc_pages.contains(c)) {
            *seen.entry(c).or_insert(0) += 1;
        }
        assert!(seen.len() > 20, "{mode:?}: {} libc pages", seen.len());
        assert!(
            seen.values().any(|&n| n >= 2),
            "{mode:?}: no libc page twice"
        );
        match &native {
            None => native = Some(a.clone()),
            Some(n) => assert_eq!(differ(n), 0, "{mode:?}: contents differ from native"),
        }
    }
}

/// Built-in workloads map one shared "binary": its text pages have the
/// same content in two VMs running different built-ins.
#[test]
fn builtin_workloads_share_their_binary_text() {
    use vmemsim::workload::{builtin_binary, WorkloadKind, WorkloadSpec};
    let key = file_key(&builtin_binary());
    let text_page = file_page(key, 0);
    let inputs: Vec<Vec<Record>> = [WorkloadKind::Seq, WorkloadKind::Random]
        .iter()
        .map(|&k| {
            let mut s = WorkloadSpec::default_for(k);
            s.accesses = 20_000;
            s.footprint_mib = 4;
            collect(&mut s.source())
        })
        .collect();
    for mode in ModeKind::ALL {
        let sims: Vec<HostSim> = inputs
            .iter()
            .map(|r| {
                let mut sim = content_host(mode, std::slice::from_ref(r), 1024).checked();
                sim.run(&mut |_| {}).unwrap();
                sim
            })
            .collect();
        for sim in &sims {
            // The loop runs from text offset 0: pid 1 faulted in page 0
            // (its process has exited; a freed frame keeps its content).
            assert!(all_contents(sim, 0).contains(&text_page), "{mode:?}");
        }
    }
}

/// A VM started from a snapshot of a real process (`vmemsim snapshot`):
/// every present page of the snapshot holds exactly its content hash in
/// the guest, in every mode, while the VM's own workload runs beside it.
/// Skipped, with a message, where the snapshot cannot be taken.
#[test]
fn a_vm_started_from_a_snapshot_holds_its_contents() {
    use vmemsim::host::snapshot_vm::SNAPSHOT_PID_BASE;
    use vmemsim_trace::snapshot;
    let cmd: Vec<std::ffi::OsString> = ["sleep", "0"].iter().map(Into::into).collect();
    let file = match snapshot::run_and_snapshot(&cmd, None) {
        Ok((f, _)) => f,
        Err(e) => {
            eprintln!("skipped: cannot snapshot a traced child here: {e}");
            return;
        }
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join("contents-sleep.snap.json");
    std::fs::write(&path, snapshot::to_json(&file)).unwrap();
    let s = file.snapshots.last().unwrap();
    for mode in ModeKind::ALL {
        let text = format!(
            "[host]\nmem_mib = 1024\n[[vm]]\nname = \"a\"\nworkload = \"seq\"\naccesses = 20000\n\
             footprint_mib = 4\nmode = \"{}\"\nmem_mib = 256\nsnapshots = [\"{}\"]\n",
            mode.name(),
            path.display()
        );
        let cfg = HostConfig::from_toml(&text, "t.toml", dir).unwrap();
        let mut sim = HostSim::new(&cfg).unwrap();
        sim.run(&mut |_| {}).unwrap();
        let mut checked = 0;
        for v in &s.vmas {
            if v.end > 1 << 47 {
                continue;
            }
            for &(i, h) in &v.pages {
                let va = v.start + i * 4096;
                assert_eq!(
                    content_at(&sim, 0, SNAPSHOT_PID_BASE, va),
                    h,
                    "{mode:?}: page {va:#x} of {:?}",
                    v.path
                );
                checked += 1;
            }
        }
        assert_eq!(checked, s.present_pages() as usize - vsyscall_pages(s));
    }
}

fn vsyscall_pages(s: &vmemsim_trace::snapshot::Snapshot) -> usize {
    s.vmas
        .iter()
        .filter(|v| v.end > 1 << 47)
        .map(|v| v.pages.len())
        .sum()
}
