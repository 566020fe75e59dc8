//! Many VMs on one host: the run loop of `vmemsim host`.
//!
//! Each VM is a guest OS on a [`Machine`] of its own mode, reading its own
//! records. The VMs are time-sliced on the host's pCPUs, deterministically:
//! every round, each pCPU in order takes the next VM of a round-robin queue
//! and runs it for `host.vm_quantum_instructions` guest instructions (a
//! quantum ends before an instruction fetch). Each pCPU has its own TLBs
//! and walk caches, shared by the VMs that run on it and tagged by VPID.
//!
//! - A world switch (a pCPU going from one VM to another) costs
//!   `host.world_switch_cycles`. With `host.vpid = false` every VM runs as
//!   VPID 0, so the switch, and every VM exit, flushes the pCPU's TLBs and
//!   PSCs [SDM 29.4.3.1].
//! - A VM resumed on a pCPU other than the one it last ran on has its
//!   entries there flushed first (INVVPID + INVEPT single-context on that
//!   pCPU), as KVM flushes on vCPU migration: INVLPGs it issued meanwhile
//!   went to the other pCPU.
//! - Host memory is one [`HostMemory`] pool. The loop keeps
//!   `host.reserve_mib` free between guest operations: below it, the host
//!   swaps out random frames (as ESX) of the swappable VM with the lowest
//!   shares-per-page ratio [ESX 5.2] until twice the reserve is free.
//!   A swap-out clears the EPT entry and, through the shadow reverse map,
//!   every shadow leaf of the frame, then flushes the VM on every pCPU
//!   (INVEPT single-context). The VM's next access exits (EPT violation /
//!   hidden fault) and the host reads the frame back: the VM waits
//!   `host.swap_latency_us`. Swap-outs are written back asynchronously (no
//!   VM waits for them). Guest page-table frames are not chosen, nor are
//!   direct (pinned PV memory) or native VMs' frames.
//!
//! - With an `[esx]` section the ESX memory manager ([`crate::esx`])
//!   acts between quanta ([`esx`]): idle sampling, target allocations,
//!   reclamation states, the balloon driver (applied when a VM is
//!   entered), swapping to targets and blocking in the low state.
//!
//! Each VM's inner loop is monomorphized per mode (`VmRun` is generic;
//! the host holds them as trait objects and dispatches once per quantum).

pub mod esx;
pub mod report;
pub mod scanner;
pub mod sharing;
pub mod sharing_report;

use std::collections::VecDeque;

use vmemsim_trace::{Access, AccessKind, Record, RecordSource};

use crate::addr::{Gpfn, Hpfn};
use crate::cost::CostModel;
use crate::esx::manager::Manager;
use crate::guest::balloon::Balloon;
use crate::guest::{softwalk, GuestOs};
use crate::host::config::{HostConfig, VmInput, VmSpec};
use crate::host::{HostMemory, Vm, VmId};
use crate::hv::{Machine, Mode, SwitchReport};
use crate::mmu::Hw;
use crate::pte::ept;
use crate::sim::{apply_access, apply_event, ModeVisitor, BATCH};
use crate::stats::Stats;
use crate::window::{Mark, Window, WindowReport};
use crate::ModeKind;
use crate::SimError;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

pub use esx::{EsxHostReport, EsxVm};
pub use report::{HostReport, Sample, VmReport};

/// What one VM's quantum ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QuantumEnd {
    /// The slice is used up; more records follow.
    Preempted,
    /// The VM's input is exhausted.
    Done,
    /// The host pool fell below its reserve before the next record: the
    /// host must reclaim, then resume the quantum.
    NeedMemory,
    /// The VM's measured window opened before the next record (its
    /// warm-up is over): the host snapshots its counters, then resumes
    /// the quantum.
    WindowStart,
}

/// Per-VM host counters (beyond the mode's [`Stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HostVmCounters {
    /// World switches onto this VM (a pCPU went to it from another VM).
    pub world_switches: u64,
    /// TLB and PSC flushes of a pCPU because VPIDs are off (world switches and VM exits).
    pub no_vpid_flushes: u64,
    /// Flushes of this VM's entries on a pCPU it migrated to.
    pub migration_flushes: u64,
    /// Quanta run.
    pub quanta: u64,
    /// Cycles the VM waited for host swap-ins (`host.swap_latency_us` each).
    pub swap_wait_cycles: u64,
    /// INVEPT single-context for this VM, one per pCPU flushed (host
    /// swap-outs, migrations).
    pub invepts: u64,
    /// INVVPID single-context (migrations; world switches without VPIDs).
    pub invvpids: u64,
    /// Shadow entries of this VM zapped through the reverse map (host swap-outs).
    pub rmap_zaps: u64,
    /// `cost.host_swap_out_cycles`, `cost.invept_cycles`,
    /// `cost.invvpid_cycles` and `cost.rmap_zap_cycles` for the above and the
    /// VM's host swap-outs: the host's own work for the VM, cycles.
    pub host_work_cycles: u64,
}

impl HostVmCounters {
    /// Counts since `earlier` (a snapshot of the same VM's counters).
    fn since(&self, earlier: &Self) -> Self {
        HostVmCounters {
            world_switches: self.world_switches - earlier.world_switches,
            no_vpid_flushes: self.no_vpid_flushes - earlier.no_vpid_flushes,
            migration_flushes: self.migration_flushes - earlier.migration_flushes,
            quanta: self.quanta - earlier.quanta,
            swap_wait_cycles: self.swap_wait_cycles - earlier.swap_wait_cycles,
            invepts: self.invepts - earlier.invepts,
            invvpids: self.invvpids - earlier.invvpids,
            rmap_zaps: self.rmap_zaps - earlier.rmap_zaps,
            host_work_cycles: self.host_work_cycles - earlier.host_work_cycles,
        }
    }
}

/// A VM's host-side counts at one moment (a measured window's start or
/// end), subtracted to give the window's.
#[derive(Clone, Debug, Default)]
struct HostCounts {
    counters: HostVmCounters,
    host_swap_outs: u64,
    host_swap_ins: u64,
    double_pagings: u64,
    balloon_cycles: u64,
}

impl HostCounts {
    fn since(&self, earlier: &Self) -> Self {
        HostCounts {
            counters: self.counters.since(&earlier.counters),
            host_swap_outs: self.host_swap_outs - earlier.host_swap_outs,
            host_swap_ins: self.host_swap_ins - earlier.host_swap_ins,
            double_pagings: self.double_pagings - earlier.double_pagings,
            balloon_cycles: self.balloon_cycles - earlier.balloon_cycles,
        }
    }
}

/// One VM's state on the host, type-erased (dispatch once per quantum).
trait VmDyn {
    fn quantum(
        &mut self,
        hw: &mut Hw,
        host: &mut HostMemory,
        until: u64,
        reserve: u64,
        check: bool,
    ) -> Result<QuantumEnd, SimError>;
    fn vm(&self) -> &Vm;
    fn vm_mut(&mut self) -> &mut Vm;
    /// Sharing: backed `gpfn` (host frame `old`, merged and freed) is now
    /// backed by shared frame `keep`, read-only; the mode's mappings of
    /// `old` go (shadow leaves zapped) or are repointed at `keep`
    /// read-only (direct paging's machine entries). Returns the entries
    /// changed. The caller flushes.
    fn share_into(&mut self, host: &mut HostMemory, gpfn: u64, old: Hpfn, keep: Hpfn) -> u64;
    /// Sharing: backed `gpfn`'s frame `h` became shared: every mapping of
    /// it loses its write right. Returns the shadow entries changed. The
    /// caller flushes.
    fn write_protect(&mut self, host: &mut HostMemory, gpfn: u64, h: Hpfn) -> u64;
    /// Swap out guest frame `gpfn` (host side and the mode's mappings);
    /// the shadow entries zapped, or `None` when the swap device is full.
    /// The caller flushes.
    fn swap_out(&mut self, host: &mut HostMemory, gpfn: u64) -> Option<u64>;
    /// True when `gpfn` holds a guest page table (never a victim).
    fn is_table(&self, gpfn: u64) -> bool;
    fn finish(&mut self, hw: &mut Hw, host: &mut HostMemory) -> Option<SwitchReport>;
    fn resolutions(&mut self) -> Vec<(u64, u64)>;
    /// The counters of the VM's measured window and what it covered.
    fn measured(&self) -> Result<(Stats, WindowReport), SimError>;
    /// True once the measured window has closed (`sim_instructions` done).
    fn window_closed(&self) -> bool;
    fn guest(&self) -> &GuestOs;
    fn guest_mut(&mut self) -> &mut GuestOs;
    /// Idle sampling: drop every mapping of backed `gpfn` (EPT entry and
    /// the mode's own, e.g. shadow leaves) so the next access traps, and
    /// watch for that refill ([`crate::host::Vm::watch`]); returns the
    /// shadow entries zapped. The caller flushes.
    fn invalidate(&mut self, host: &mut HostMemory, gpfn: u64) -> u64;
    /// True when the guest touched `gpfn` since [`VmDyn::invalidate`]: it
    /// was refilled, or is mapped now (EPT entry or a mode mapping).
    fn touched(&self, host: &HostMemory, gpfn: u64) -> bool;
    /// The sampling period is over: stop watching its frames.
    fn unwatch(&mut self);
    /// Pages in the guest's balloon.
    fn balloon_size(&self) -> u64;
    /// Move the balloon to `target` pages, the guest reclaiming with its
    /// own policy when it lacks free frames (running on `hw`): (inflated,
    /// deflated, host frames freed, shadow entries zapped). The caller
    /// flushes.
    fn balloon_to(
        &mut self,
        hw: &mut Hw,
        host: &mut HostMemory,
        target: u64,
    ) -> (u64, u64, u64, u64);
}

/// A VM of mode `M`: its guest, machine and input.
struct VmRun<M: Mode> {
    guest: GuestOs,
    machine: Machine<M>,
    running: Option<u32>,
    src: Box<dyn RecordSource>,
    buf: Vec<Record>,
    pos: usize,
    /// (gPFN, hPFN) of every access, kept only when checking (tests).
    seen: Vec<(u64, u64)>,
    balloon: Balloon,
    /// The measured window, on this VM's own instruction count.
    window: Window,
    /// Counters when the window closed (the VM stops there).
    closed: Option<Stats>,
}

impl<M: Mode> VmRun<M> {
    #[inline]
    fn run<const CHECK: bool>(
        &mut self,
        hw: &mut Hw,
        host: &mut HostMemory,
        until: u64,
        reserve: u64,
    ) -> Result<QuantumEnd, SimError> {
        loop {
            if self.pos == self.buf.len() {
                self.buf.clear();
                self.pos = 0;
                if self.src.next_batch(&mut self.buf, BATCH)? == 0 {
                    return Ok(QuantumEnd::Done);
                }
            }
            let i = self.pos;
            if let Record::Access(a) = &self.buf[i] {
                if a.kind == AccessKind::Fetch {
                    let n = self.machine.vm.stats.instructions;
                    // The window first, as `Sim::run` checks it: a VM
                    // whose window closes stops there, not a quantum later.
                    if self.window.due(n) {
                        match self.window.mark(&self.machine.vm.stats) {
                            Mark::Start => {
                                let run = self.machine.on(hw, host);
                                run.mode.window_start(&run.core);
                                return Ok(QuantumEnd::WindowStart);
                            }
                            Mark::Stop => {
                                self.closed = Some(self.machine.vm.stats.clone());
                                return Ok(QuantumEnd::Done);
                            }
                        }
                    }
                    if n >= until {
                        return Ok(QuantumEnd::Preempted);
                    }
                }
            }
            if host.free() < reserve {
                return Ok(QuantumEnd::NeedMemory);
            }
            self.pos += 1;
            let mut m = self.machine.on(hw, host);
            match &self.buf[i] {
                Record::Access(a) => {
                    let t = apply_access(&mut m, &mut self.guest, &mut self.running, a)?;
                    if a.kind.is_write() {
                        self.guest.note_store(a.pid, t.gpfn, a.addr, a.size);
                    }
                    if CHECK {
                        check(&self.guest, m.core.vm, m.core.host, a, t.gpfn, t.hpfn);
                        self.seen.push((t.gpfn, t.hpfn));
                    }
                }
                Record::Event(e) => {
                    apply_event(&mut m, &mut self.guest, &mut self.running, e.pid, &e.kind)?
                }
            }
        }
    }
}

/// The oracle for one access of a VM on a shared host: the gPFN is the
/// guest's own tables' (a plain software walk), the hPFN the VM's p2m's,
/// and the host frame backs this VM's frame (the m2p names it, or, for a
/// frame shared by content, its owners do). A shared frame holds what
/// every owner's guest frame holds, and a store never completes on a
/// frame that is write-protected for sharing (shared, or not yet made
/// writable again): it must have broken the sharing first.
fn check(guest: &GuestOs, vm: &Vm, host: &HostMemory, a: &Access, gpfn: u64, hpfn: u64) {
    let p = guest.current().expect("a process runs");
    let m = softwalk::translate(&guest.mem, p.root, guest.levels(), a.addr)
        .unwrap_or_else(|| panic!("VM {}: {a:?} resolved but the guest does not map it", vm.id));
    assert_eq!(
        gpfn, m.gpfn,
        "VM {}: {a:?}: gPFN differs from the guest tables",
        vm.id
    );
    let g = Gpfn(gpfn);
    assert_eq!(
        vm.p2m(g).map(|h| h.0),
        Some(hpfn),
        "VM {}: {a:?}: hPFN differs from the p2m",
        vm.id
    );
    let h = Hpfn(hpfn);
    assert!(
        host.backs(h, vm.id, g),
        "VM {}: host frame {hpfn:#x} not this VM's",
        vm.id
    );
    if let Some(s) = host.shared_frame(h) {
        let mine = guest.contents().map(|c| c.get(gpfn));
        assert_eq!(
            mine,
            Some(s.content),
            "VM {}: {a:?}: shared frame {hpfn:#x} holds other content",
            vm.id
        );
    }
    assert!(
        !(a.kind.is_write() && host.cow_protected(h)),
        "VM {}: {a:?}: store to write-protected shared frame {hpfn:#x} without a break",
        vm.id
    );
}

impl<M: Mode> VmDyn for VmRun<M> {
    fn quantum(
        &mut self,
        hw: &mut Hw,
        host: &mut HostMemory,
        until: u64,
        reserve: u64,
        check: bool,
    ) -> Result<QuantumEnd, SimError> {
        if check {
            self.run::<true>(hw, host, until, reserve)
        } else {
            self.run::<false>(hw, host, until, reserve)
        }
    }
    fn vm(&self) -> &Vm {
        &self.machine.vm
    }
    fn vm_mut(&mut self) -> &mut Vm {
        &mut self.machine.vm
    }
    fn share_into(&mut self, host: &mut HostMemory, gpfn: u64, old: Hpfn, keep: Hpfn) -> u64 {
        self.machine.vm.remap_shared(host, Gpfn(gpfn), keep);
        self.machine
            .mode
            .host_share_into(host, Gpfn(gpfn), old, keep)
    }
    fn write_protect(&mut self, host: &mut HostMemory, gpfn: u64, h: Hpfn) -> u64 {
        self.machine.vm.ept_write_protect(host, Gpfn(gpfn));
        self.machine.mode.host_write_protect(host, Gpfn(gpfn), h)
    }
    fn swap_out(&mut self, host: &mut HostMemory, gpfn: u64) -> Option<u64> {
        let h = self.machine.vm.swap_out(host, crate::addr::Gpfn(gpfn))?;
        Some(self.machine.mode.host_unmap(host, Gpfn(gpfn), h))
    }
    fn is_table(&self, gpfn: u64) -> bool {
        self.guest.mem.contains(gpfn)
    }
    fn finish(&mut self, hw: &mut Hw, host: &mut HostMemory) -> Option<SwitchReport> {
        self.machine.finish(hw, host)
    }
    fn resolutions(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.seen)
    }
    fn measured(&self) -> Result<(Stats, WindowReport), SimError> {
        self.window
            .measured(self.closed.as_ref().unwrap_or(&self.machine.vm.stats))
    }
    fn window_closed(&self) -> bool {
        self.closed.is_some()
    }
    fn guest(&self) -> &GuestOs {
        &self.guest
    }
    fn guest_mut(&mut self) -> &mut GuestOs {
        &mut self.guest
    }
    fn invalidate(&mut self, host: &mut HostMemory, gpfn: u64) -> u64 {
        let g = crate::addr::Gpfn(gpfn);
        self.machine.vm.watch(g);
        let Some(h) = self.machine.vm.p2m(g) else {
            return 0;
        };
        self.machine.vm.ept_set(host, g, 0);
        self.machine.mode.host_unmap(host, Gpfn(gpfn), h)
    }
    fn touched(&self, host: &HostMemory, gpfn: u64) -> bool {
        let g = crate::addr::Gpfn(gpfn);
        let vm = &self.machine.vm;
        vm.refilled(g)
            || vm.p2m(g).is_some_and(|h| {
                ept::present(vm.ept_entry(host, g))
                    || self.machine.mode.host_mapped(host, Gpfn(gpfn), h)
            })
    }
    fn unwatch(&mut self) {
        self.machine.vm.unwatch_all();
    }
    fn balloon_size(&self) -> u64 {
        self.guest.balloon_size()
    }
    fn balloon_to(
        &mut self,
        hw: &mut Hw,
        host: &mut HostMemory,
        target: u64,
    ) -> (u64, u64, u64, u64) {
        let b = self.guest.balloon_size();
        if target <= b {
            return (0, self.balloon.deflate(&mut self.guest, b - target), 0, 0);
        }
        // The balloon's allocations put the guest under pressure: it
        // reclaims (swaps) with its own policy [ESX 3.2]; a no-op for a
        // guest without swap.
        if self.guest.free_frames() <= self.guest.balloon_watermark() + (target - b) {
            let mut m = self.machine.on(hw, host);
            self.guest.reclaim(&mut m);
        }
        let pages = self.balloon.inflate(&mut self.guest, target - b).to_vec();
        let (mut freed, mut zaps) = (0, 0);
        for &g in &pages {
            if let Some((h, f)) = self.machine.vm.release(host, crate::addr::Gpfn(g)) {
                zaps += self.machine.mode.host_unmap(host, Gpfn(g), h);
                freed += u64::from(f);
            }
        }
        (pages.len() as u64, 0, freed, zaps)
    }
}

/// One pCPU: its hardware, the VM it ran last, and its clock.
struct Pcpu {
    hw: Hw,
    last: Option<usize>,
    cycles: u64,
}

/// A host with its VMs, ready to run.
pub struct HostSim {
    cfg: HostConfig,
    host: HostMemory,
    pcpus: Vec<Pcpu>,
    vms: Vec<Box<dyn VmDyn>>,
    counters: Vec<HostVmCounters>,
    /// pCPU each VM last ran on.
    last_pcpu: Vec<Option<usize>>,
    costs: Vec<CostModel>,
    check: bool,
    /// VMs whose frames the host may swap (not direct: a PV domain's
    /// memory is pinned; not native: no second translation to revoke).
    swappable: Vec<bool>,
    rng: Xoshiro256PlusPlus,
    queue: VecDeque<usize>,
    series: Vec<Sample>,
    next_sample: u64,
    last_stats: Vec<Stats>,
    switching: Vec<Option<SwitchReport>>,
    peak_used: u64,
    /// The ESX memory manager (`[esx]`), if on.
    esx: Option<Manager>,
    /// Its per-VM state on the host (balloon target, blocking, counters).
    esx_vm: Vec<esx::EsxVm>,
    /// The page-sharing scanner (`[sharing]`), if on.
    scanner: Option<scanner::Scanner>,
    /// Each VM's host counts when its measured window opened (`None`
    /// during the warm-up) and when it closed.
    window_start: Vec<Option<HostCounts>>,
    window_end: Vec<Option<HostCounts>>,
    /// Each VM's own execution time, cycles (priced quanta and swap-in
    /// waits): the ESX manager's sampling periods count it.
    vm_cycles: Vec<u64>,
}

impl std::fmt::Debug for HostSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostSim")
            .field("vms", &self.vms.len())
            .finish()
    }
}

struct Build<'a> {
    spec: &'a VmSpec,
    vm: Vm,
    src: Box<dyn RecordSource>,
}

impl ModeVisitor for Build<'_> {
    type Output = Box<dyn VmDyn>;
    fn visit<M: Mode>(self, mode: M) -> Box<dyn VmDyn> {
        // A native VM keeps its own tag: on a shared host a bare-metal
        // partition is a context the host tells apart from the others, as
        // a host kernel gives each process its own PCID; with one tag for
        // all (VPID 0) two natives would hit each other's TLB entries.
        let vm = self.vm;
        Box::new(VmRun {
            guest: GuestOs::new(&self.spec.cfg.guest).named(format!("VM \"{}\"", self.spec.name)),
            machine: Machine::new(mode, vm),
            running: None,
            src: self.src,
            buf: Vec::with_capacity(BATCH),
            pos: 0,
            seen: Vec::new(),
            balloon: Balloon::default(),
            window: Window::new(&self.spec.cfg.measure),
            closed: None,
        })
    }
}

/// Open the input of `spec`.
///
/// # Errors
/// The trace cannot be opened.
pub fn open_input(spec: &VmSpec) -> Result<Box<dyn RecordSource>, SimError> {
    Ok(match &spec.input {
        VmInput::Builtin(s) => Box::new(s.source()),
        VmInput::Trace(p) => crate::sched::open_trace(p, &spec.cfg)?,
    })
}

impl HostSim {
    /// The host of `cfg` with every VM created and its input opened.
    ///
    /// # Errors
    /// A VM's trace cannot be opened.
    pub fn new(cfg: &HostConfig) -> Result<Self, SimError> {
        let mut sources = Vec::with_capacity(cfg.vms.len());
        let mut presets = Vec::new();
        for (i, spec) in cfg.vms.iter().enumerate() {
            let src = open_input(spec)?;
            if spec.snapshots.is_empty() {
                sources.push(src);
                continue;
            }
            // A VM started from snapshots: their processes come first.
            let (recs, pages) = crate::host::snapshot_vm::load(&spec.snapshots)?;
            sources.push(Box::new(crate::host::snapshot_vm::Chain::new(recs, src)) as _);
            presets.push((i, pages));
        }
        let mut sim = Self::with_sources(cfg, sources);
        for (i, pages) in presets {
            sim.preset_contents(i, &pages);
        }
        Ok(sim)
    }

    /// VM `i`'s pages (pid, virtual page number) take these contents when
    /// first faulted in (a VM started from snapshots); its contents are
    /// tracked from now on.
    pub fn preset_contents(&mut self, i: usize, pages: &[((u32, u64), u64)]) {
        let g = self.vms[i].guest_mut();
        g.track_contents();
        let c = g.contents_mut().expect("tracked");
        for &((pid, vpn), id) in pages {
            c.preset(pid, vpn, id);
        }
    }

    /// As [`HostSim::new`] with the VMs' records from `sources` (one per VM, in order).
    pub fn with_sources(cfg: &HostConfig, sources: Vec<Box<dyn RecordSource>>) -> Self {
        assert_eq!(sources.len(), cfg.vms.len(), "one source per VM");
        let mut host = HostMemory::new(cfg.host.mem_mib * 256).with_swap(cfg.host.swap_mib * 256);
        let vms = cfg
            .vms
            .iter()
            .zip(sources)
            .enumerate()
            .map(|(i, (spec, src))| {
                let id = i as VmId;
                let vpid = if cfg.host.vpid { id as u16 + 1 } else { 0 };
                let mut vm = Vm::new(
                    id,
                    vpid,
                    spec.cfg.guest.mem_mib * 256,
                    spec.cfg.guest.pcid,
                    &mut host,
                );
                vm.hosted = true;
                vm.scanned = cfg.sharing.enabled;
                vm.ept_levels = spec.cfg.host.ept_levels;
                vm.host_page = spec.cfg.host.page_size;
                vm.track_resident();
                vm.flush_on_exit = !cfg.host.vpid;
                vm.bt = (spec.mode.is_virtualized()
                    && spec.cfg.cpu.virtualization == crate::config::Virtualization::Bt)
                    .then(|| crate::host::BinaryTranslator::new(spec.cfg.cpu.adapt_threshold));
                spec.mode.with_mode(&spec.cfg, Build { spec, vm, src })
            })
            .collect::<Vec<_>>();
        let n = vms.len();
        let mut vms = vms;
        if cfg.sharing.enabled {
            // The scanner compares what the frames hold.
            for v in &mut vms {
                v.guest_mut().track_contents();
            }
        }
        HostSim {
            pcpus: (0..cfg.host.pcpus)
                .map(|_| Pcpu {
                    hw: Hw::new(&cfg.base),
                    last: None,
                    cycles: 0,
                })
                .collect(),
            host,
            vms,
            counters: vec![HostVmCounters::default(); n],
            last_pcpu: vec![None; n],
            costs: cfg
                .vms
                .iter()
                .map(|v| CostModel::for_config(&v.cfg))
                .collect(),
            swappable: cfg
                .vms
                .iter()
                .map(|v| {
                    !matches!(
                        v.mode,
                        ModeKind::Direct | ModeKind::Native | ModeKind::SwtlbNative
                    )
                })
                .collect(),
            rng: Xoshiro256PlusPlus::seed_from_u64(cfg.host.seed),
            queue: (0..n).collect(),
            series: Vec::new(),
            next_sample: 0,
            last_stats: vec![Stats::default(); n],
            switching: vec![None; n],
            peak_used: 0,
            esx: cfg
                .esx
                .section
                .enabled
                .then(|| Manager::new(&cfg.esx, cfg.host.seed, cfg.base.cpu.ghz)),
            esx_vm: vec![esx::EsxVm::default(); n],
            scanner: cfg
                .sharing
                .enabled
                .then(|| scanner::Scanner::new(&cfg.sharing)),
            window_start: cfg
                .vms
                .iter()
                .map(|v| (v.cfg.measure.warmup_instructions == 0).then(HostCounts::default))
                .collect(),
            window_end: vec![None; n],
            vm_cycles: vec![0; n],
            cfg: cfg.clone(),
            check: false,
        }
    }

    /// Check every access against the oracle (tests): the gPFN against the
    /// VM's guest tables, the hPFN against its p2m and the host's m2p;
    /// panics on a mismatch. Keeps every access's (gPFN, hPFN) for
    /// [`HostSim::resolutions`].
    pub fn checked(mut self) -> Self {
        self.check = true;
        self
    }

    /// Back guest frames with scrambled hPFNs (tests;
    /// [`HostMemory::scatter_fresh_frames`]), so that a checked run also
    /// catches code that assumes contiguous backing. Call before the run.
    pub fn scattered(mut self) -> Self {
        self.host.scatter_fresh_frames();
        self
    }

    /// Where VM `i`'s accesses resolved so far (checked runs only); taken.
    pub fn resolutions(&mut self, i: usize) -> Vec<(u64, u64)> {
        self.vms[i].resolutions()
    }

    /// The host's state of VM `i`.
    pub fn vm(&self, i: usize) -> &Vm {
        self.vms[i].vm()
    }

    /// Track what every guest frame of every VM holds
    /// (guest/content.rs); call before running.
    pub fn track_contents(mut self) -> Self {
        for v in &mut self.vms {
            v.guest_mut().track_contents();
        }
        self
    }

    /// The guest of VM `i`.
    pub fn guest(&self, i: usize) -> &GuestOs {
        self.vms[i].guest()
    }

    /// What sharing could reclaim now (every VM must track contents:
    /// [`HostSim::track_contents`]).
    pub fn sharing_census(&self) -> sharing::SharingCensus {
        let guests: Vec<&GuestOs> = self.vms.iter().map(|v| v.guest()).collect();
        sharing::census(&guests)
    }

    /// Each VM's consumed host memory now, frames (ESX's "consumed"
    /// memory): its private backed frames plus its charge for the shared
    /// frames it maps (`1/k` of a frame per guest frame on a frame shared
    /// by `k`; [`HostMemory::shared_charges`]). Without sharing, its
    /// backed frames. The VMs' consumed frames add up to the guest frames
    /// the host backs (used frames less the hypervisor's tables). The ESX
    /// manager's allocations, shares-per-page ratios and reclamation
    /// count this, so frames sharing saved are reclaimed memory.
    pub fn consumed_frames(&self) -> Vec<f64> {
        let charges = self.host.shared_charges(self.vms.len());
        self.vms
            .iter()
            .zip(charges)
            .map(|(v, c)| {
                let vm = v.vm();
                let on_shared = self.host.sharing(Some(vm.id)).sharing_guest_frames;
                (vm.backed_frames - on_shared) as f64 + c
            })
            .collect()
    }

    /// Host memory.
    pub fn host(&self) -> &HostMemory {
        &self.host
    }

    /// Give pCPU `p` to VM `v`: world switch, VPID-less flush, migration flush.
    fn enter(&mut self, p: usize, v: usize) {
        let pc = &mut self.pcpus[p];
        let c = &mut self.counters[v];
        if pc.last.is_some_and(|l| l != v) {
            c.world_switches += 1;
            pc.cycles += self.cfg.host.world_switch_cycles;
            if !self.cfg.host.vpid {
                c.no_vpid_flushes += 1;
                c.invvpids += 1;
                pc.hw.invvpid_single(0);
            }
        }
        if self.last_pcpu[v].is_some_and(|l| l != p) {
            let vm = self.vms[v].vm();
            c.migration_flushes += 1;
            // INVVPID + INVEPT single-context.
            c.invvpids += 1;
            c.invepts += 1;
            pc.hw.invept_single(vm.ept_tag, vm.vpid);
        }
        pc.last = Some(v);
        self.last_pcpu[v] = Some(p);
    }

    /// Add VM `v`'s run on pCPU `p` since `before` (its exit flushes and
    /// host swap-ins then; updated) to its counters and the pCPU's clock:
    /// flushes without VPIDs, swap-in waits, priced cycles, host work.
    fn account(&mut self, p: usize, v: usize, before: &mut (u64, u64), wait_cycles: u64) {
        let vm = self.vms[v].vm();
        let c = &mut self.counters[v];
        c.no_vpid_flushes += vm.exit_flushes - before.0;
        let swap_ins = vm.host_swap_ins - before.1;
        c.swap_wait_cycles += swap_ins * wait_cycles;
        let d = vm.stats.since(&self.last_stats[v]);
        let ran = self.costs[v].price(&d).total + swap_ins * wait_cycles;
        self.pcpus[p].cycles += ran;
        self.vm_cycles[v] += ran;
        self.last_stats[v] = vm.stats.clone();
        *before = (vm.exit_flushes, vm.host_swap_ins);
        self.pcpus[p].cycles += self.charge_host_work();
    }

    /// VM `v`'s host-side counts now.
    fn host_counts(&self, v: usize) -> HostCounts {
        let vm = self.vms[v].vm();
        HostCounts {
            counters: self.counters[v].clone(),
            host_swap_outs: vm.host_swap_outs,
            host_swap_ins: vm.host_swap_ins,
            double_pagings: vm.double_pagings,
            balloon_cycles: self.esx_vm[v].balloon_cycles,
        }
    }

    /// VM `v`'s host-side counts in its measured window (zero while it
    /// is still warming up).
    fn window_counts(&self, v: usize) -> HostCounts {
        match &self.window_start[v] {
            None => HostCounts::default(),
            Some(start) => self.window_end[v]
                .clone()
                .unwrap_or_else(|| self.host_counts(v))
                .since(start),
        }
    }

    /// Price the host's work for every VM since the last call (swap-outs,
    /// INVEPT, INVVPID, reverse-map zaps) into its counters; returns the
    /// cycles added (the pCPU that ran the host did the work).
    fn charge_host_work(&mut self) -> u64 {
        let mut added = 0;
        for (w, c) in self.counters.iter_mut().enumerate() {
            let vm = self.vms[w].vm();
            // A COW break: the copy and the INVEPT on the VM's pCPU.
            let now = self.costs[w].host_work_cycles(
                vm.host_swap_outs,
                c.invepts + vm.sharing.cow_flushes,
                c.invvpids,
                c.rmap_zaps,
            ) + vm.sharing.cow_breaks * self.cfg.sharing.copy_cycles;
            added += now - c.host_work_cycles;
            c.host_work_cycles = now;
        }
        added
    }

    /// Hypervisor swapping of `gpfn` of VM `v` now (tests use it to place
    /// a swap-out; the run loop does it under pressure): the frame goes to
    /// host swap, its EPT entry and shadow leaves are cleared, and the VM's
    /// entries are flushed on every pCPU (INVEPT single-context). False when
    /// the frame is not backed, holds a guest page table, or swap is full.
    pub fn swap_out(&mut self, v: usize, gpfn: u64) -> bool {
        if self.not_victim(v, gpfn) {
            return false;
        }
        let Some(zaps) = self.vms[v].swap_out(&mut self.host, gpfn) else {
            return false;
        };
        let vm = self.vms[v].vm();
        for p in &mut self.pcpus {
            p.hw.invept_single(vm.ept_tag, vm.vpid);
        }
        let c = &mut self.counters[v];
        c.rmap_zaps += zaps;
        c.invepts += self.pcpus.len() as u64;
        true
    }

    /// True when VM `v`'s `gpfn` cannot be swapped out: not backed, a guest
    /// page table, or backed by a shared frame (swapping it would free
    /// nothing; sharing already reclaimed it).
    pub(super) fn not_victim(&self, v: usize, gpfn: u64) -> bool {
        self.vms[v]
            .vm()
            .p2m(Gpfn(gpfn))
            .map_or(true, |h| self.host.is_shared(h))
            || self.vms[v].is_table(gpfn)
    }

    /// True when some resident frame of VM `v` can be swapped out.
    fn has_victim_frame(&self, v: usize) -> bool {
        let res = self.vms[v].vm().resident();
        res.iter().any(|&g| !self.not_victim(v, g))
    }

    /// Free frames until the pool has twice its reserve: random frames
    /// (as ESX) of the swappable VM with the lowest shares-per-page ratio
    /// ([`HostSim::reclaim_victim`]). A VM none of whose frames can go
    /// (all shared or page tables) is passed over for the next one.
    ///
    /// # Errors
    /// [`SimError::HostOutOfMemory`] when no VM has a frame to give and
    /// the pool is still below its reserve; [`SimError::HostSwapFull`].
    fn reclaim(&mut self, reserve: u64) -> Result<(), SimError> {
        let target = (2 * reserve).min(self.host.capacity());
        let mut exhausted = vec![false; self.vms.len()];
        let mut tries = 0u32;
        let mut last = 0;
        while self.host.free() < target {
            let Some(v) = self.reclaim_victim(&exhausted) else {
                if self.host.free() >= reserve {
                    // The margin above the reserve is only hysteresis.
                    return Ok(());
                }
                return Err(SimError::HostOutOfMemory {
                    vm: last as VmId,
                    free_frames: self.host.free(),
                });
            };
            last = v;
            let res = self.vms[v].vm().resident();
            let g = res[self.rng.gen_range(0..res.len())];
            if self.not_victim(v, g) {
                tries += 1;
                // Random draws keep ESX's choice; after a run of misses,
                // one exact look says whether to keep drawing from `v`.
                if tries % 64 == 0 && !self.has_victim_frame(v) {
                    exhausted[v] = true;
                }
                continue;
            }
            if !self.swap_out(v, g) {
                return Err(SimError::HostSwapFull {
                    swap_mib: self.cfg.host.swap_mib,
                });
            }
        }
        Ok(())
    }

    /// Run one round: each pCPU runs the next VM for a quantum. Returns
    /// false once every VM has finished.
    ///
    /// # Errors
    /// As [`HostSim::run`].
    pub fn round(&mut self) -> Result<bool, SimError> {
        if self.queue.is_empty() {
            return Ok(false);
        }
        let quantum = self.cfg.host.vm_quantum_instructions;
        let reserve = self.cfg.host.reserve_mib * 256;
        let wait_cycles = self
            .cfg
            .base
            .cpu
            .cycles_of_us(self.cfg.host.swap_latency_us);
        let mut ran = Vec::with_capacity(self.pcpus.len());
        for p in 0..self.pcpus.len() {
            let Some(v) = self.next_runnable() else {
                break;
            };
            self.enter(p, v);
            self.esx_balloon(p, v);
            let mut before = (
                self.vms[v].vm().exit_flushes,
                self.vms[v].vm().host_swap_ins,
            );
            let until = self.vms[v].vm().stats.instructions + quantum;
            let end = loop {
                let end = self.vms[v].quantum(
                    &mut self.pcpus[p].hw,
                    &mut self.host,
                    until,
                    reserve,
                    self.check,
                )?;
                if self.host.overdrawn() {
                    return Err(SimError::HostOutOfMemory {
                        vm: v as VmId,
                        free_frames: 0,
                    });
                }
                self.peak_used = self.peak_used.max(self.host.used());
                match end {
                    QuantumEnd::NeedMemory => {
                        // Share before swap: what sharing frees need not be swapped.
                        self.scan_under_pressure(p);
                        if self.host.free() < reserve {
                            self.reclaim(reserve)?;
                        }
                    }
                    QuantumEnd::WindowStart => {
                        // Counts up to here belong to the warm-up.
                        self.account(p, v, &mut before, wait_cycles);
                        self.window_start[v] = Some(self.host_counts(v));
                    }
                    _ => break end,
                }
            };
            self.account(p, v, &mut before, wait_cycles);
            self.counters[v].quanta += 1;
            if self.vms[v].window_closed() {
                self.window_end[v] = Some(self.host_counts(v));
            }
            self.scan(p);
            self.pcpus[p].cycles += self.charge_host_work();
            match end {
                QuantumEnd::Preempted => ran.push(v),
                _ => {
                    self.switching[v] = self.vms[v].finish(&mut self.pcpus[p].hw, &mut self.host);
                }
            }
            self.esx_tick();
            // The manager's own INVEPTs and zaps, on the pCPU that ran it.
            self.pcpus[p].cycles += self.charge_host_work();
        }
        self.queue.extend(ran);
        let now = self.now();
        if now >= self.next_sample || self.queue.is_empty() {
            self.series.push(self.sample(now));
            self.sharing_sample(now);
            self.next_sample = now + self.cfg.host.sample_cycles;
        }
        Ok(!self.queue.is_empty())
    }

    /// Run every VM to the end of its input; `progress` gets the
    /// instructions retired by all VMs after each round.
    ///
    /// # Errors
    /// A VM's trace read error or guest resource error, or a host that
    /// cannot free memory (nothing swappable left, swap full).
    pub fn run(&mut self, progress: &mut dyn FnMut(u64)) -> Result<HostReport, SimError> {
        while self.round()? {
            progress(self.vms.iter().map(|v| v.vm().stats.instructions).sum());
        }
        for (v, spec) in self.vms.iter().zip(&self.cfg.vms) {
            if let Err(e) = v.measured() {
                return Err(SimError::Workload(format!("VM \"{}\": {e}", spec.name)));
            }
        }
        Ok(self.report())
    }

    /// Host time: the furthest pCPU clock, cycles.
    fn now(&self) -> u64 {
        self.pcpus.iter().map(|p| p.cycles).max().unwrap_or(0)
    }

    fn sample(&self, now: u64) -> Sample {
        Sample {
            seconds: self.cfg.base.cpu.seconds(now),
            free_frames: self.host.free(),
            table_frames: self.host.table_pages(),
            vm_frames: self.vms.iter().map(|v| v.vm().backed_frames).collect(),
            vm_swapped: self.vms.iter().map(|v| v.vm().swapped_frames).collect(),
        }
    }

    /// The report of the run so far.
    pub fn report(&self) -> HostReport {
        let series = self.series.clone();
        let switching = self.switching.clone();
        let peak_used = self.peak_used;
        let ghz = self.cfg.base.cpu.ghz;
        let vms = self
            .vms
            .iter()
            .zip(&self.cfg.vms)
            .zip(switching)
            .enumerate()
            .map(|(i, ((v, spec), switching))| {
                let vm = v.vm();
                // Counters of the VM's own measured window (a VM still
                // warming up has measured nothing yet).
                let (stats, window) = v.measured().unwrap_or_else(|_| {
                    let m = &spec.cfg.measure;
                    let w = WindowReport {
                        warmup_instructions: m.warmup_instructions,
                        sim_instructions: m.sim_instructions,
                        ..WindowReport::default()
                    };
                    (Stats::default(), w)
                });
                let w = self.window_counts(i);
                let c = &w.counters;
                let cycles = self.costs[i].price(&stats);
                let host_cycles = cycles.total
                    + c.world_switches * self.cfg.host.world_switch_cycles
                    + c.swap_wait_cycles
                    + c.host_work_cycles
                    + w.balloon_cycles;
                VmReport {
                    name: spec.name.clone(),
                    mode: spec.mode,
                    input: spec.describe(),
                    mem_mib: spec.cfg.guest.mem_mib,
                    vpid: vm.vpid,
                    stats,
                    window,
                    cycles,
                    host: c.clone(),
                    host_cycles,
                    seconds: host_cycles as f64 / (ghz * 1e9),
                    frames: vm.backed_frames,
                    host_swap_outs: w.host_swap_outs,
                    host_swap_ins: w.host_swap_ins,
                    double_pagings: w.double_pagings,
                    switching,
                    alone: None,
                }
            })
            .collect();
        HostReport {
            mem_mib: self.cfg.host.mem_mib,
            pcpus: self.cfg.host.pcpus,
            vpid: self.cfg.host.vpid,
            ghz,
            frames: self.host.capacity(),
            peak_used_frames: peak_used,
            table_frames: self.host.table_pages(),
            seconds: self.now() as f64 / (ghz * 1e9),
            vms,
            series,
            esx: self.esx_report(),
            sharing: self.sharing_report(),
        }
    }
}

/// Run the host of `cfg` (inputs opened here).
///
/// # Errors
/// As [`HostSim::new`] and [`HostSim::run`].
pub fn run_host(cfg: &HostConfig, progress: &mut dyn FnMut(u64)) -> Result<HostReport, SimError> {
    HostSim::new(cfg)?.run(progress)
}
