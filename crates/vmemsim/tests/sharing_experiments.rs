//! Issue 10's sharing experiments (examples/sharing/*.toml) at reduced
//! size: N identical VMs on one real recording, a mixed host, and the cost
//! of sharing in nested vs shadow paging. Full-size numbers, next to the
//! published ones, are in docs/sharing.md.

use std::path::Path;

use vmemsim::host::config::HostConfig;
use vmemsim::hostsim::{HostReport, HostSim};

fn example(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/sharing")
            .join(name),
    )
    .unwrap()
}

/// `identical.toml` with `n` VMs of `mode`, or without `[sharing]`.
fn identical(n: usize, mode: &str, sharing: bool) -> HostReport {
    let s = example("identical.toml");
    let i0 = s.find("\n[[vm]]").unwrap() + 1;
    let i1 = s[i0 + 1..].find("\n[[vm]]").unwrap() + i0 + 2;
    let (mut head, vm) = (s[..i0].to_string(), &s[i0..i1]);
    if !sharing {
        let a = head.find("[sharing]").unwrap();
        head.truncate(a);
    }
    let mut text = head;
    for i in 0..n {
        text += &vm
            .replace("vm0", &format!("vm{i}"))
            .replace("\"nested\"", &format!("\"{mode}\""));
    }
    run(&text)
}

fn run(text: &str) -> HostReport {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sharing");
    let cfg = HostConfig::from_toml(text, "example", &dir).unwrap();
    HostSim::new(&cfg).unwrap().run(&mut |_| {}).unwrap()
}

fn frames(r: &HostReport) -> u64 {
    r.vms.iter().map(|v| v.frames).sum()
}

/// Experiment 1 at N = 1..3 (nested): identical VMs share most of their
/// frames; what is saved grows with N and stays below (N - 1) / N of the
/// frames backed (one copy of each content must stay); one VM alone saves
/// nothing at the end (its within-VM shares were all broken by stores).
/// Frames of the host add up: backed minus saved plus tables is what the
/// pool has in use.
#[test]
fn identical_vms_share_more_as_they_multiply() {
    let mut last = 0;
    for n in 1..=3u64 {
        let r = identical(n as usize, "nested", true);
        let sh = r.sharing.as_ref().expect("[sharing] on");
        let f = frames(&r);
        let saved = sh.host.saved_frames;
        assert!(saved * n <= (n - 1) * f, "N = {n}: {saved} of {f}");
        if n == 1 {
            assert_eq!(saved, 0);
        } else {
            assert!(saved > last, "N = {n}: saved grows");
            assert!(
                2 * sh.host.sharing_guest_frames > f,
                "N = {n}: most frames shared"
            );
        }
        last = saved;
        // Every merge is a share; every COW break undoes one.
        let merged: u64 = sh.vms.iter().map(|v| v.counters.merged).sum();
        assert_eq!(merged, sh.scanner.shares);
        assert!(sh.cow_breaks() <= merged);
    }
}

/// Experiment 2 (reduced: three of the mixed host's VMs, each running a
/// real recording and starting from a snapshot of a real program: sh,
/// sort, gzip). The snapshots' pages hold the hashes of real bytes: the
/// libc and ld.so pages every snapshot has are equal across the VMs and
/// shared; they are nearly all file-backed (measured: 2.5 MiB of
/// snapshot pages saved, all but a few frames file-backed; zero pages 1.2
/// MiB; 1109 of 2247 frames saved). The by-kind split is a time series:
/// at every sample the kinds, and within + across, add up to the frames
/// saved then, and the last sample is the end's split.
#[test]
fn a_mixed_host_with_snapshots_shares_real_library_pages_across_vms() {
    let s = example("mixed.toml");
    let cut = s.find("name = \"sqlite\"").unwrap();
    let cut = s[..cut].rfind("[[vm]]").unwrap();
    let r = run(&s[..cut]);
    let sh = r.sharing.as_ref().unwrap();
    let f = frames(&r);
    let h = &sh.host;
    let k = &sh.split;
    assert!(k.saved_by_kind[3] > 0, "snapshot pages shared: {k:?}");
    assert!(
        10 * k.saved_snapshot_file >= 9 * k.saved_by_kind[3],
        "mostly file-backed: {k:?}"
    );
    assert!(k.saved_across_vms > 0 && k.saved_by_kind[0] > 0, "{k:?}");
    assert!(sh.scanner.zero_shares > 0, "zero pages shared");
    assert!(h.saved_frames < f, "{h:?} of {f}");
    assert!(sh.series.len() > 2);
    for p in &sh.series {
        let kinds: u64 = p.split.saved_by_kind.iter().sum();
        assert_eq!(kinds, p.saved_frames, "{p:?}");
        assert_eq!(
            p.split.saved_within_vm + p.split.saved_across_vms,
            p.saved_frames
        );
        assert!(p.split.saved_snapshot_file <= p.split.saved_by_kind[3]);
    }
    assert_eq!(
        &sh.series.last().unwrap().split,
        k,
        "the series ends at the end"
    );
    assert!(
        sh.series
            .iter()
            .any(|p| p.split.saved_by_kind[3] < k.saved_by_kind[3]),
        "the snapshot saving grows over the run"
    );
    let table = sh.to_table(&["echo-wc", "sort-uniq", "gzip"], r.ghz);
    assert!(
        table.starts_with("sharing: ")
            && table.contains("\ngzip ")
            && table.contains("snapshot 2.5 (file-backed 2.5) MiB"),
        "{table}"
    );
}

/// Experiment 3 (N = 2): sharing costs exits (COW breaks, and in shadow
/// mode the refills of zapped leaves) and the scanner's CPU time, in both
/// modes; the host time with the scanner exceeds the host time without it
/// by at least the scanner's CPU time; shadow pays more exits than nested
/// for the same sharing.
#[test]
fn sharing_costs_exits_and_scanner_time_in_nested_and_shadow() {
    let mut extra_exits = Vec::new();
    for mode in ["nested", "shadow"] {
        let on = identical(2, mode, true);
        let off = identical(2, mode, false);
        assert!(off.sharing.is_none());
        let sh = on.sharing.as_ref().unwrap();
        let exits = |r: &HostReport| -> u64 { r.vms.iter().map(|v| v.stats.total_exits()).sum() };
        assert!(exits(&on) >= exits(&off) + sh.cow_breaks(), "{mode}");
        let cpu = sh.scanner.cpu_cycles as f64 / (on.ghz * 1e9);
        assert!(
            on.seconds >= off.seconds + cpu * 0.99,
            "{mode}: {} vs {} + {cpu}",
            on.seconds,
            off.seconds
        );
        assert!(sh.host.saved_frames > 0, "{mode}");
        extra_exits.push(exits(&on) - exits(&off));
    }
    assert!(extra_exits[1] > extra_exits[0], "{extra_exits:?}");
}
