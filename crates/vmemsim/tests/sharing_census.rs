//! What sharing could reclaim (hostsim/sharing.rs): exact census of equal
//! contents across VMs, by kind and within/across VMs, and N identical VMs
//! on a real recording. (The scanner and copy-on-write sharing are not
//! implemented yet; this is the ideal scanner's view at one moment.)

mod common;

use std::path::Path;

use vmemsim::hostsim::sharing::SharingCensus;
use vmemsim::hostsim::HostSim;
use vmemsim::sim::ModeKind;
use vmemsim_trace::{AccessKind, Record};

use common::{acc, anon_mmap, collect, content_host};

const A: u64 = 0x7000_0000;

fn mmap(len: u64) -> Record {
    anon_mmap(1, A, len)
}

/// Two VMs with a page of equal content (the first store of each
/// process, same offset, same size) and a zero page each: after the run
/// the census finds both pairs: 4 frames in use, 4 shared, 2 saved (one
/// zero, one anonymous), both across VMs. A second store in one VM makes
/// its page differ: 1 saved.
#[test]
fn equal_pages_of_two_vms_are_found_and_a_store_separates_them() {
    let vm = |extra_store: bool| {
        let mut r = vec![
            mmap(1 << 20),
            acc(1, AccessKind::Store, A + 0x10),
            acc(1, AccessKind::Load, A + 0x1000),
        ];
        if extra_store {
            r.push(acc(1, AccessKind::Store, A + 0x18));
        }
        r
    };
    // Non-native modes only share a host safely (two native VMs share
    // VPID 0 TLB entries: a host-model bug reported separately); native
    // VMs (`native`, `swtlb-native`) run as one VM per host and are
    // combined by hand.
    for mode in ModeKind::ALL {
        for (extra, saved, anon) in [(false, 2, 1), (true, 1, 0)] {
            let inputs = [vm(false), vm(extra)];
            let c = if !mode.is_virtualized() {
                let sims: Vec<HostSim> = inputs
                    .iter()
                    .map(|r| {
                        let mut s = content_host(mode, std::slice::from_ref(r), 2048);
                        s.run(&mut |_| {}).unwrap();
                        s
                    })
                    .collect();
                vmemsim::hostsim::sharing::census(&[sims[0].guest(0), sims[1].guest(0)])
            } else {
                let mut s = content_host(mode, &inputs, 2048);
                s.run(&mut |_| {}).unwrap();
                s.sharing_census()
            };
            assert_eq!(
                c,
                SharingCensus {
                    frames_in_use: 4,
                    shared_frames: 2 * saved,
                    frames_saved: saved,
                    saved_by_kind: [1, 0, anon, 0],
                    saved_within_vm: 0,
                    saved_across_vms: saved,
                },
                "{mode:?}, extra store {extra}"
            );
        }
    }
}

/// A zero page shared by many VMs: 5 VMs each touch 10 zero pages; 50
/// frames hold ZERO, 49 could be freed, 5 x 9 = 45 within a VM, 4 across.
#[test]
fn zero_pages_of_many_vms() {
    let mut r = vec![mmap(1 << 20)];
    r.extend((0..10).map(|i| acc(1, AccessKind::Load, A + i * 4096)));
    for mode in ModeKind::ALL {
        if !mode.is_virtualized() {
            continue; // two native VMs cannot share a host (see above)
        }
        let mut s = content_host(mode, &vec![r.clone(); 5], 2048);
        s.run(&mut |_| {}).unwrap();
        let c = s.sharing_census();
        assert_eq!(
            (c.frames_in_use, c.frames_saved, c.saved_by_kind[0]),
            (50, 49, 49),
            "{mode:?}"
        );
        assert_eq!((c.saved_within_vm, c.saved_across_vms), (45, 4), "{mode:?}");
    }
}

/// N identical VMs on the same real recording, each after the same number
/// of quanta: every VM holds exactly the first VM's contents, so sharing
/// could free (N - 1) x U frames plus what one VM shares within itself
/// (U = frames in use of one VM).
#[test]
fn n_identical_vms_on_a_real_recording() {
    let recs = collect(
        vmemsim_trace::open(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/sh-echo-wc-files.vmt"),
        )
        .unwrap()
        .as_mut(),
    );
    for mode in [ModeKind::Nested, ModeKind::Shadow, ModeKind::Agile] {
        let mut one: Option<SharingCensus> = None;
        for n in 1..=3u64 {
            let mut s = content_host(mode, &vec![recs.clone(); n as usize], 2048);
            for _ in 0..40 * n {
                s.round().unwrap();
            }
            let c = s.sharing_census();
            let o = one.get_or_insert_with(|| c.clone()).clone();
            assert!(o.frames_in_use > 100, "{mode:?}: {o:?}");
            assert_eq!(c.frames_in_use, n * o.frames_in_use, "{mode:?} N={n}");
            assert_eq!(
                c.frames_saved,
                (n - 1) * o.frames_in_use + o.frames_saved,
                "{mode:?} N={n}"
            );
            assert_eq!(c.saved_within_vm, n * o.saved_within_vm, "{mode:?} N={n}");
        }
    }
}

/// The experiments of docs/sharing.md at full size (N = 1..10 identical
/// VMs; a mixed host of different recordings and a built-in). Prints the
/// numbers; run by hand:
/// `cargo test --release -p vmemsim --test sharing_census -- --ignored --nocapture`
#[test]
#[ignore = "prints the experiment tables of docs/sharing.md"]
fn experiments() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    let rec = |name: &str| collect(vmemsim_trace::open(&data.join(name)).unwrap().as_mut());
    let same = rec("sh-echo-wc-files.vmt");
    println!("N identical VMs (sh-echo-wc-files, nested, after 40 quanta each):");
    println!("N  in-use  shared%  saved%  saved%-no-zero  zero  file  anon  within  across");
    for n in 1..=10u64 {
        let mut s = content_host(ModeKind::Nested, &vec![same.clone(); n as usize], 2048);
        for _ in 0..40 * n {
            s.round().unwrap();
        }
        let c = s.sharing_census();
        println!(
            "{n:<2} {:>7} {:>7.1} {:>7.1} {:>15.1} {:>5} {:>5} {:>5} {:>7} {:>7}",
            c.frames_in_use,
            100.0 * c.shared_fraction(),
            100.0 * c.saved_fraction(),
            100.0 * c.saved_fraction_without_zero(),
            c.saved_by_kind[0],
            c.saved_by_kind[1],
            c.saved_by_kind[2],
            c.saved_within_vm,
            c.saved_across_vms
        );
    }
    let mut seq =
        vmemsim::workload::WorkloadSpec::default_for(vmemsim::workload::WorkloadKind::Procs);
    seq.accesses = 400_000;
    let mixed = vec![
        same.clone(),
        rec("sh-sort-uniq.vmt"),
        rec("gzip-small.vmt"),
        rec("sqlite-small.vmt"),
        rec("xz-small.vmt"),
        collect(&mut seq.source()),
    ];
    let k = mixed.len() as u64;
    for mode in [ModeKind::Nested, ModeKind::Shadow] {
        let mut s = content_host(mode, &mixed, 2048);
        for _ in 0..40 * k {
            s.round().unwrap();
        }
        let c = s.sharing_census();
        println!(
            "mixed host ({mode:?}, 6 VMs after 40 quanta each): {c:?}\n  shared {:.1}%, saved {:.1}%, saved without zero pages {:.1}%",
            100.0 * c.shared_fraction(),
            100.0 * c.saved_fraction(),
            100.0 * c.saved_fraction_without_zero()
        );
    }
}
