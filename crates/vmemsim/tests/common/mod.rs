//! The oracle harness: runs records through one mode access by access and
//! checks each against a plain, uncached software walk of the guest tables
//! and the host's p2m.

#![allow(dead_code)]

use vmemsim::guest::softwalk;
use vmemsim::host::config::HostConfig;
use vmemsim::hostsim::HostSim;
use vmemsim::hv::selective::{Paging, Policy, PolicyInput, Selective};
use vmemsim::hv::{Mode, SwitchReport};
use vmemsim::pte::x86;
use vmemsim::sim::{rights, ModeKind, ModeVisitor, Sim};
use vmemsim::stats::Stats;
use vmemsim::Config;
use vmemsim_trace::{Access, AccessKind, ProcEvent, Record, RecordSource, TraceError};

/// Where each access resolved: (gPFN, hPFN), in order.
pub type Resolutions = Vec<(u64, u64)>;

/// Run `records` on `mode`, checking every access against the oracle.
pub fn run_checked<M: Mode>(mode: M, cfg: &Config, records: &[Record]) -> (Resolutions, Stats) {
    let (r, s, _) = run_checked_report(mode, cfg, records);
    (r, s)
}

/// As [`run_checked`], also returning the mode's switching report.
pub fn run_checked_report<M: Mode>(
    mode: M,
    cfg: &Config,
    records: &[Record],
) -> (Resolutions, Stats, Option<SwitchReport>) {
    let native = !M::VIRTUALIZED;
    let name = mode.name();
    let mut sim = Sim::new(mode, cfg);
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        match r {
            Record::Access(a) => {
                let mut got = None;
                sim.access(a, &mut |_, t| got = Some(t)).expect("access");
                let t = got.expect("observer called");
                check(&sim, a, t.gpfn, t.hpfn, native, name, i);
                out.push((t.gpfn, t.hpfn));
            }
            Record::Event(e) => sim.event(e.pid, &e.kind).expect("event"),
        }
    }
    let report = sim.finish();
    (out, sim.machine.vm.stats.clone(), report)
}

fn check<M: Mode>(
    sim: &Sim<M>,
    a: &Access,
    gpfn: u64,
    hpfn: u64,
    native: bool,
    mode: &str,
    i: usize,
) {
    let p = sim.guest.current().expect("a process runs");
    let m = softwalk::translate(&sim.guest.mem, p.root, sim.guest.levels(), a.addr).unwrap_or_else(
        || panic!("{mode}: record {i}: {a:?} resolved but the guest does not map it"),
    );
    assert_eq!(
        gpfn, m.gpfn,
        "{mode}: record {i}: {a:?}: gPFN differs from the oracle"
    );
    assert!(
        m.pte & x86::A != 0,
        "{mode}: record {i}: accessed bit not set in the guest PTE"
    );
    if a.kind.is_write() {
        assert!(
            m.pte & x86::RW != 0 && m.pte & x86::D != 0,
            "{mode}: record {i}: store through a clean or read-only guest PTE"
        );
    }
    if native {
        assert_eq!(hpfn, gpfn, "{mode}: native hPA must equal gPA");
    } else {
        assert_eq!(
            Some(hpfn),
            sim.machine.vm.p2m(vmemsim::addr::Gpfn(gpfn)).map(|h| h.0),
            "{mode}: record {i}: hPFN differs from the p2m"
        );
    }
}

/// A test policy that switches at every period boundary, so the oracle
/// sees as many switches as possible.
#[derive(Debug, Default)]
pub struct Alternate;

impl Policy for Alternate {
    const NAME: &'static str = "selective-alternate";
    fn decide(&mut self, input: &PolicyInput<'_>) -> Paging {
        match input.cur {
            Paging::Nested => Paging::Shadow,
            Paging::Shadow => Paging::Nested,
        }
    }
}

/// What one mode did in [`all_modes`].
#[derive(Debug)]
pub struct ModeRun {
    /// Mode name.
    pub name: &'static str,
    /// Counters.
    pub stats: Stats,
    /// Switching report, for switching modes.
    pub report: Option<SwitchReport>,
}

/// The harness configuration for switching modes: short periods so that
/// switches happen within a small test trace.
pub fn short_periods(cfg: &Config) -> Config {
    let mut c = cfg.clone();
    c.selective.period_instructions = c.selective.period_instructions.min(2_000);
    c.agile.interval_instructions = c.agile.interval_instructions.min(2_000);
    // Every period a W11 sample, tables back to shadow after one clean
    // interval: as many switches and mode changes as possible.
    c.selective.w11_sample_switch_costs = 0.0;
    c.agile.clean_refill_costs = 0.0;
    c
}

/// Run `records` through every mode of [`ModeKind::ALL`] that `cfg` can
/// run (native first), then a switch-every-period selective, each access checked against the
/// oracle; assert all agree on every gPA, that every virtualized mode gives
/// the same hPA as nested (or, with `cpu.tlb = "software"`, as
/// swtlb-vmm), and the same guest faults and PTE stores. Every
/// mode runs with [`short_periods`] (static modes do not read them), so
/// switching modes switch within a small test trace.
pub fn all_modes(cfg: &Config, records: &[Record]) -> Vec<ModeRun> {
    let sc = short_periods(cfg);
    let run = |name, (r, stats, report)| {
        (
            r,
            ModeRun {
                name,
                stats,
                report,
            },
        )
    };
    // Under binary translation only the modes it can run (native, shadow,
    // swtlb-native); with a software-managed TLB only the swtlb modes.
    let mut runs: Vec<(bool, Resolutions, ModeRun)> = ModeKind::ALL
        .into_iter()
        .filter(|kind| kind.runs_with(&sc))
        .map(|kind| {
            let (r, m) = run(kind.name(), kind.with_mode(&sc, Checked(&sc, records)));
            (kind.is_virtualized(), r, m)
        })
        .collect();
    if ModeKind::Nested.runs_with(&sc) {
        assert_eq!(runs[1].2.name, "nested", "hPAs are compared with nested's");
        let (r, m) = run(
            "selective-alternate",
            run_checked_report(Selective::with_policy(Alternate, &sc), &sc, records),
        );
        runs.push((true, r, m));
    }
    let (_, rn, native) = &runs[0];
    assert!(
        !runs[0].0,
        "{}: the first mode is a native one",
        native.name
    );
    // hPAs are compared with the first virtualized mode's (nested, or
    // swtlb-vmm with a software-managed TLB); native modes have gPA = hPA.
    let re = runs.iter().find(|r| r.0).map(|r| &r.1);
    for (virtualized, r, m) in &runs[1..] {
        assert_eq!(rn.len(), r.len(), "{}: access count", m.name);
        for (i, (n, x)) in rn.iter().zip(r).enumerate() {
            assert_eq!(n.0, x.0, "access {i}: native and {} gPFN differ", m.name);
        }
        if let (true, Some(re)) = (virtualized, re) {
            for (i, (e, x)) in re.iter().zip(r).enumerate() {
                assert_eq!(e.1, x.1, "access {i}: {} hPFN differs", m.name);
            }
        }
        let (s, sn) = (&m.stats, &native.stats);
        assert_eq!(
            s.guest_page_faults, sn.guest_page_faults,
            "{}: guest faults differ from native",
            m.name
        );
        assert_eq!(s.demand_faults, sn.demand_faults, "{}", m.name);
        assert_eq!(s.cow_faults, sn.cow_faults, "{}", m.name);
        assert_eq!(s.guest_pte_writes, sn.guest_pte_writes, "{}", m.name);
        // Guest reclaim decides on accessed bits every mode must keep alike.
        let swap = |s: &Stats| {
            (
                s.major_faults,
                s.guest_swap_outs,
                s.guest_swap_ins,
                s.reclaim_scanned,
                s.accessed_bits_cleared,
            )
        };
        assert_eq!(
            swap(s),
            swap(sn),
            "{}: guest swap differs from native",
            m.name
        );
    }
    runs.into_iter().map(|(_, _, m)| m).collect()
}

/// [`run_checked_report`] as a [`ModeVisitor`]: with the configuration
/// and the records.
pub struct Checked<'a>(pub &'a Config, pub &'a [Record]);

impl ModeVisitor for Checked<'_> {
    type Output = (Resolutions, Stats, Option<SwitchReport>);
    fn visit<M: Mode>(self, mode: M) -> Self::Output {
        run_checked_report(mode, self.0, self.1)
    }
}

/// Run `records` through every mode ([`all_modes`]); returns the stats of
/// native, nested and shadow, in that order.
pub fn all_modes_agree(cfg: &Config, records: &[Record]) -> [Stats; 3] {
    let mut runs = all_modes(cfg, records).into_iter();
    let mut next = || runs.next().expect("mode").stats;
    [next(), next(), next()]
}

/// An access record.
pub fn acc(pid: u32, kind: vmemsim_trace::AccessKind, addr: u64) -> Record {
    Record::Access(Access {
        addr,
        pid,
        size: 8,
        kind,
    })
}

/// An event record.
pub fn ev(pid: u32, kind: ProcEvent) -> Record {
    Record::event(pid, kind)
}

/// Run `src` to completion into a vector.
pub fn collect(src: &mut dyn vmemsim_trace::RecordSource) -> Vec<Record> {
    let mut v = Vec::new();
    while src.next_batch(&mut v, 4096).expect("read") > 0 {}
    v
}

/// Silence "unused" for rights in some test binaries.
pub fn _r() -> vmemsim::mmu::Rights {
    rights(vmemsim_trace::AccessKind::Load)
}

/// Replays records already in memory (field 1: the next record's index).
pub struct Replay(pub Vec<Record>, pub usize);

impl RecordSource for Replay {
    fn next_batch(&mut self, buf: &mut Vec<Record>, max: usize) -> Result<usize, TraceError> {
        let n = max.min(self.0.len() - self.1);
        buf.extend_from_slice(&self.0[self.1..self.1 + n]);
        self.1 += n;
        Ok(n)
    }
}

/// A boxed [`Replay`] of `records`, from the start.
pub fn replay(records: &[Record]) -> Box<dyn RecordSource> {
    Box::new(Replay(records.to_vec(), 0))
}

/// A [`ModeVisitor`] that runs records (field 1) with a configuration
/// (field 0) through the oracle harness and returns the mode's counters.
pub struct CheckedStats<'a>(pub &'a Config, pub &'a [Record]);

impl ModeVisitor for CheckedStats<'_> {
    type Output = Stats;
    fn visit<M: Mode>(self, mode: M) -> Stats {
        run_checked(mode, self.0, self.1).1
    }
}

/// A [`ModeVisitor`] that runs one VM's records (field 1) with its
/// configuration (field 0) alone through the oracle harness
/// ([`run_checked`]): what a VM of a host must match.
pub struct Alone<'a>(pub &'a Config, pub &'a [Record]);

impl ModeVisitor for Alone<'_> {
    type Output = (Resolutions, Stats);
    fn visit<M: Mode>(self, mode: M) -> Self::Output {
        run_checked(mode, self.0, self.1)
    }
}

/// `kind`'s counters on `records` with `cfg`, every access checked
/// against the oracle.
pub fn checked_stats(kind: ModeKind, cfg: &Config, records: &[Record]) -> Stats {
    kind.with_mode(cfg, CheckedStats(cfg, records))
}

/// An anonymous private read-write mapping (`PROT_READ | PROT_WRITE`,
/// `MAP_PRIVATE | MAP_ANONYMOUS`) of `len` bytes at `addr` by `pid`.
pub fn anon_mmap(pid: u32, addr: u64, len: u64) -> Record {
    anon_mmap_prot(pid, addr, len, 3)
}

/// `pid` unmaps `len` bytes at `addr`.
pub fn munmap(pid: u32, addr: u64, len: u64) -> Record {
    ev(pid, ProcEvent::Munmap { addr, len })
}

/// An anonymous private mmap of `len` bytes at `addr` with `PROT_*` bits
/// `prot` (7: read, write and execute).
pub fn anon_mmap_prot(pid: u32, addr: u64, len: u64, prot: u32) -> Record {
    ev(
        pid,
        ProcEvent::Mmap {
            addr,
            len,
            prot,
            flags: 0x22,
            file: None,
        },
    )
}

/// Process 1 maps 4 MiB at `a`, stores to its first two pages and loads
/// the first; forks process 2, which stores to page 0 (a copy-on-write
/// break); process 1 loads page 1; process 2 unmaps page 1 and exits;
/// process 1 stores to page 0 (read-only since the fork, no copy left to
/// make). tests/exits.rs derives every mode's exits on it.
pub fn fork_cow_trace(a: u64) -> Vec<Record> {
    use AccessKind::{Load, Store};
    vec![
        anon_mmap(1, a, 4 << 20),
        acc(1, Store, a),
        acc(1, Store, a + 0x1000),
        acc(1, Load, a),
        ev(1, ProcEvent::Fork { child: 2 }),
        acc(2, Store, a),
        acc(1, Load, a + 0x1000),
        ev(
            2,
            ProcEvent::Munmap {
                addr: a + 0x1000,
                len: 0x1000,
            },
        ),
        ev(2, ProcEvent::Exit { code: 0 }),
        acc(1, Store, a),
    ]
}

/// A host of `host_mib` MiB with one VM of 128 MiB per input, every VM
/// in `mode`, replaying its input, contents tracked (guest/content.rs).
pub fn content_host(mode: ModeKind, inputs: &[Vec<Record>], host_mib: u64) -> HostSim {
    let mut text = format!("[host]\nmem_mib = {host_mib}\nvm_quantum_instructions = 5000\n");
    for i in 0..inputs.len() {
        text += &format!(
            "[[vm]]\nname = \"vm{i}\"\nworkload = \"seq\"\nmode = \"{}\"\nmem_mib = 128\n",
            mode.name()
        );
    }
    let cfg = HostConfig::from_toml(
        &text,
        "test.toml",
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
    )
    .unwrap();
    let sources = inputs.iter().map(|r| replay(r)).collect();
    HostSim::with_sources(&cfg, sources).track_contents()
}

/// A host of 1 GiB running `vms` VMs of 64 MiB in `mode` (workload
/// placeholders: the tests give each VM its records), with a scanner fast
/// enough to visit every frame after each quantum of one instruction: a
/// VM runs to its next instruction fetch, then the scanner merges.
/// `extra`: more config sections for every VM (e.g. `[agile]`).
pub fn scanning_host(mode: ModeKind, vms: usize, extra: &str) -> HostConfig {
    let mut text = "[host]\nmem_mib = 1024\nvm_quantum_instructions = 1\n\
                    [sharing]\nrate_pages_per_s = 1e12\n"
        .to_string();
    text += extra;
    for i in 0..vms {
        text += &format!(
            "[[vm]]\nname = \"vm{i}\"\nworkload = \"seq\"\nmode = \"{}\"\nmem_mib = 64\n",
            mode.name()
        );
    }
    HostConfig::from_toml(&text, "scanning-host.toml", std::path::Path::new(".")).unwrap()
}
