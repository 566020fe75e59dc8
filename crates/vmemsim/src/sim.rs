//! The simulation loop: records from any [`RecordSource`] drive the guest OS
//! model on a [`Machine`] of one mode. Monomorphized per mode; the
//! per-access path allocates nothing and formats nothing.

use serde::Serialize;
use vmemsim_trace::{Access, AccessKind, ProcEvent, Record, RecordSource};

use crate::config::{Config, HugePages, TlbManagement, Virtualization};
use crate::cost::{CostModel, Cycles};
use crate::guest::GuestOs;
use crate::host::{HostMemory, Vm};
use crate::hv::selective::{predictive_mode, w11_mode};
use crate::hv::{
    Agile, Direct, Machine, Mode, Native, Nested, Running, Shadow, SwTlbNative, SwTlbVmm,
    SwitchReport, Translation,
};
use crate::mmu::{Hw, Rights};
use crate::stats::Stats;
use crate::window::{Mark, Window, WindowReport};
use crate::SimError;

/// The modes a run can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModeKind {
    /// No VM: 1-D walks of the OS's tables.
    Native,
    /// Nested paging (EPT/NPT): 2-D walks.
    Nested,
    /// Shadow paging: write-protected guest tables, hidden faults.
    Shadow,
    /// Paravirtual direct paging (Xen PV): validated, batched PTE updates; 1-D walks.
    Direct,
    /// Agile paging \[AP16\]: walks start in the shadow table and switch to
    /// nested where the guest tables are being written.
    Agile,
    /// Switching between nested and shadow with the rules of \[W11\].
    SelectiveW11,
    /// Switching between nested and shadow with our cost-predicting policy.
    Selective,
    /// A software-managed (MIPS-style) TLB, no VM: a miss is a refill
    /// exception and the kernel's handler walks its table.
    SwtlbNative,
    /// A software-managed TLB virtualized by trap-and-emulate: the miss
    /// and the handler's TLB write trap into the VMM (pmap, guest TLB copy).
    SwtlbVmm,
}

impl ModeKind {
    /// Every mode, in report order (native first: the baseline).
    /// The x86 modes (hardware walker) first, then the software-managed
    /// TLB's family, its native first.
    pub const ALL: [ModeKind; 9] = [
        ModeKind::Native,
        ModeKind::Nested,
        ModeKind::Shadow,
        ModeKind::Direct,
        ModeKind::Agile,
        ModeKind::SelectiveW11,
        ModeKind::Selective,
        ModeKind::SwtlbNative,
        ModeKind::SwtlbVmm,
    ];

    /// Command-line and report name.
    pub fn name(self) -> &'static str {
        match self {
            ModeKind::Native => "native",
            ModeKind::Nested => "nested",
            ModeKind::Shadow => "shadow",
            ModeKind::Direct => "direct",
            ModeKind::Agile => "agile",
            ModeKind::SelectiveW11 => "selective-w11",
            ModeKind::Selective => "selective",
            ModeKind::SwtlbNative => "swtlb-native",
            ModeKind::SwtlbVmm => "swtlb-vmm",
        }
    }

    /// True for the modes that run a VM (false for `native` and
    /// `swtlb-native`, which run the guest as the OS: gPA = hPA).
    pub fn is_virtualized(self) -> bool {
        !matches!(self, ModeKind::Native | ModeKind::SwtlbNative)
    }

    /// True for the modes of a software-managed TLB (`swtlb-*`).
    pub fn software_tlb(self) -> bool {
        matches!(self, ModeKind::SwtlbNative | ModeKind::SwtlbVmm)
    }

    /// The native baseline of this mode's family: `swtlb-native` for the
    /// software-managed TLB's modes, `native` for the others.
    pub fn family_native(self) -> ModeKind {
        if self.software_tlb() {
            ModeKind::SwtlbNative
        } else {
            ModeKind::Native
        }
    }

    /// Parse a name.
    ///
    /// # Errors
    /// A message listing the valid names.
    pub fn parse(s: &str) -> Result<Self, SimError> {
        ModeKind::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                SimError::Workload(format!("unknown mode `{s}`; modes: {}", Self::names()))
            })
    }

    /// The valid names, comma separated.
    pub fn names() -> String {
        ModeKind::ALL.map(|m| m.name()).join(", ")
    }
}

/// Work to do with one concrete mode, for [`ModeKind::with_mode`] (a
/// closure cannot be generic over the mode's type).
pub trait ModeVisitor {
    /// What the work returns.
    type Output;
    /// Do it with `mode`.
    fn visit<M: Mode>(self, mode: M) -> Self::Output;
}

impl ModeKind {
    /// Build this mode's state for `cfg` and hand it to `v`: the one place a
    /// [`ModeKind`] becomes a concrete [`Mode`] (runs and tests go through it).
    pub fn with_mode<V: ModeVisitor>(self, cfg: &Config, v: V) -> V::Output {
        match self {
            ModeKind::Native => v.visit(Native),
            ModeKind::Nested => v.visit(Nested),
            ModeKind::Shadow => v.visit(Shadow::with_config(&cfg.shadow)),
            ModeKind::Direct => v.visit(Direct::new(&cfg.pv, cfg.guest.mem_mib)),
            ModeKind::Agile => v.visit(Agile::new(cfg)),
            ModeKind::SelectiveW11 => v.visit(w11_mode(cfg)),
            ModeKind::Selective => v.visit(predictive_mode(cfg)),
            ModeKind::SwtlbNative => v.visit(SwTlbNative),
            ModeKind::SwtlbVmm => v.visit(SwTlbVmm::new(cfg)),
        }
    }
}

/// Rights an access needs.
#[inline]
pub fn rights(kind: AccessKind) -> Rights {
    Rights {
        write: kind.is_write(),
        fetch: kind == AccessKind::Fetch,
    }
}

/// A guest OS running alone on one mode: one VM, one pCPU, a host with
/// unlimited memory.
#[derive(Debug)]
pub struct Sim<M: Mode> {
    /// The guest kernel.
    pub guest: GuestOs,
    /// The mode and the host's state of the VM.
    pub machine: Machine<M>,
    /// The pCPU's translation hardware.
    pub hw: Hw,
    /// Host memory.
    pub host: HostMemory,
    running: Option<u32>,
    window: Window,
}

impl<M: Mode> Sim<M> {
    /// A fresh guest with no process on `mode`: VM 0, VPID 1 (0 native).
    pub fn new(mode: M, cfg: &Config) -> Self {
        let mut host = HostMemory::unlimited();
        let vpid = u16::from(M::VIRTUALIZED);
        let mut vm = Vm::new(0, vpid, cfg.guest.mem_mib * 256, cfg.guest.pcid, &mut host);
        vm.bt = binary_translator::<M>(cfg);
        vm.ept_levels = cfg.host.ept_levels;
        if M::VIRTUALIZED {
            // A native run alone has no host under it.
            vm.host_page = cfg.host.page_size;
        }
        Sim {
            guest: GuestOs::new(&cfg.guest),
            machine: Machine::new(mode, vm),
            hw: Hw::new(cfg),
            host,
            running: None,
            window: Window::new(&cfg.measure),
        }
    }

    /// Counters so far, warm-up included.
    pub fn stats(&self) -> &Stats {
        &self.machine.vm.stats
    }

    /// End of the run: the mode closes its last interval; returns its
    /// switching report, if it has one.
    pub fn finish(&mut self) -> Option<SwitchReport> {
        self.machine.finish(&mut self.hw, &mut self.host)
    }

    /// The counters of the measured window (`cfg.measure`) and what it covered.
    ///
    /// # Errors
    /// The input ended within the warm-up.
    pub fn measured(&self) -> Result<(Stats, WindowReport), SimError> {
        self.window.measured(self.stats())
    }

    /// Before an instruction fetch: open the window when the warm-up is
    /// over (telling the mode), or say that the measured part is done.
    #[inline]
    fn window_done(&mut self) -> bool {
        if !self.window.due(self.machine.vm.stats.instructions) {
            return false;
        }
        match self.window.mark(&self.machine.vm.stats) {
            Mark::Start => {
                let run = self.machine.on(&mut self.hw, &mut self.host);
                run.mode.window_start(&run.core);
                false
            }
            Mark::Stop => true,
        }
    }

    /// Apply one access, reporting where it resolved to `observe`.
    ///
    /// # Errors
    /// Guest out of memory or PCIDs.
    #[inline]
    pub fn access(
        &mut self,
        a: &Access,
        observe: &mut impl FnMut(&Access, Translation),
    ) -> Result<(), SimError> {
        let mut m = self.machine.on(&mut self.hw, &mut self.host);
        let t = apply_access(&mut m, &mut self.guest, &mut self.running, a)?;
        observe(a, t);
        Ok(())
    }

    /// Apply one process event.
    ///
    /// # Errors
    /// Guest out of memory or PCIDs.
    pub fn event(&mut self, pid: u32, e: &ProcEvent) -> Result<(), SimError> {
        let mut m = self.machine.on(&mut self.hw, &mut self.host);
        apply_event(&mut m, &mut self.guest, &mut self.running, pid, e)
    }

    /// Run the records of `src` up to the end of the measured window (every
    /// record without one), calling `observe` after each access and
    /// `progress` with the record count after each batch.
    ///
    /// # Errors
    /// Trace read errors and guest resource errors.
    pub fn run(
        &mut self,
        src: &mut dyn RecordSource,
        observe: &mut impl FnMut(&Access, Translation),
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), SimError> {
        let mut buf = Vec::with_capacity(BATCH);
        let mut done = 0u64;
        loop {
            buf.clear();
            let n = src.next_batch(&mut buf, BATCH)?;
            if n == 0 {
                return Ok(());
            }
            for r in &buf {
                match r {
                    Record::Access(a) => {
                        if a.kind == AccessKind::Fetch && self.window_done() {
                            return Ok(());
                        }
                        self.access(a, observe)?;
                    }
                    Record::Event(e) => self.event(e.pid, &e.kind)?,
                }
            }
            done += n as u64;
            progress(done);
        }
    }
}

/// The VM's binary translator when `cfg` asks for binary translation and
/// mode `M` runs a VM (native runs none).
pub fn binary_translator<M: Mode>(cfg: &Config) -> Option<crate::host::BinaryTranslator> {
    (M::VIRTUALIZED && cfg.cpu.virtualization == Virtualization::Bt)
        .then(|| crate::host::BinaryTranslator::new(cfg.cpu.adapt_threshold))
}

impl ModeKind {
    /// True when this mode can run with `cfg`'s CPU: binary translation
    /// only runs shadow paging (and the native modes, which have no VMM);
    /// a software-managed TLB (`cpu.tlb = "software"`) only the `swtlb-*`
    /// modes, and `swtlb-vmm` is trap-and-emulate (`cpu.virtualization =
    /// "vtx"`); a Xen PV guest (`direct`) has no 1 GiB pages (see
    /// [`crate::hv::direct`]).
    pub fn runs_with(self, cfg: &Config) -> bool {
        self.check(cfg).is_ok()
    }

    /// Check that this mode can run with `cfg`.
    ///
    /// # Errors
    /// [`SimError::Config`] naming `cpu.tlb`, `guest.huge_pages` or `cpu.virtualization` and
    /// why the mode cannot run with it.
    pub fn check(self, cfg: &Config) -> Result<(), SimError> {
        let invalid = |key: &str, value: &str, why: String| {
            Err(SimError::Config(crate::config::ConfigError::Invalid {
                key: key.into(),
                value: value.into(),
                why,
            }))
        };
        if cfg.cpu.tlb == TlbManagement::Software && !self.software_tlb() {
            return invalid(
                "cpu.tlb",
                "\"software\"",
                format!(
                    "mode `{}` needs a hardware page walker (x86); with a software-managed \
                     TLB the modes are `swtlb-native` and `swtlb-vmm`",
                    self.name()
                ),
            );
        }
        if self == ModeKind::Direct && cfg.guest.huge_pages == HugePages::Huge1G {
            return invalid(
                "guest.huge_pages",
                "\"1g\"",
                "mode `direct` cannot run a guest with 1 GiB pages: Xen hides 1 GiB pages \
                 (CPUID PDPE1GB) from PV guests; use \"2m\" or \"none\""
                    .into(),
            );
        }
        if cfg.cpu.virtualization == Virtualization::Vtx || !self.is_virtualized() {
            return Ok(());
        }
        let why = match self {
            ModeKind::Shadow => return Ok(()),
            ModeKind::Direct => "a paravirtual (Xen PV) guest kernel is not binary-translated",
            ModeKind::SwtlbVmm => {
                "the software-managed TLB is virtualized by trap-and-emulate \
                 (cpu.virtualization = \"vtx\")"
            }
            _ => "nested paging needs hardware virtualization (VT-x / AMD-V)",
        };
        invalid(
            "cpu.virtualization",
            "\"bt\"",
            format!(
                "mode `{}` cannot run under binary translation: {why}; \
                 binary translation runs `shadow` (and `native`, `swtlb-native`)",
                self.name()
            ),
        )
    }
}

/// Records decoded per batch.
pub const BATCH: usize = 1 << 16;

/// One access of `guest` on machine `m` (switching the vCPU to the
/// access's process first); `running` is the process the vCPU runs.
///
/// # Errors
/// Guest out of memory or PCIDs.
#[inline]
pub fn apply_access<M: Mode>(
    m: &mut Running<'_, M>,
    guest: &mut GuestOs,
    running: &mut Option<u32>,
    a: &Access,
) -> Result<Translation, SimError> {
    crate::guest::os::check_gva(a.pid, a.addr, guest.user_top)?;
    // `running` is cleared when the running process exits (see
    // `apply_event`), so no map lookup is needed on the per-access path.
    if *running != Some(a.pid) {
        guest.switch_to(m, a.pid)?;
        *running = Some(a.pid);
    }
    m.access(guest, a.addr, rights(a.kind))
}

/// One process event of `guest` on machine `m`.
///
/// # Errors
/// Guest out of memory or PCIDs.
pub fn apply_event<M: Mode>(
    m: &mut Running<'_, M>,
    guest: &mut GuestOs,
    running: &mut Option<u32>,
    pid: u32,
    e: &ProcEvent,
) -> Result<(), SimError> {
    let vm = &mut m.core.vm;
    vm.stats.syscalls += 1;
    vm.stats.bt_syscalls += u64::from(vm.bt.is_some());
    match *e {
        ProcEvent::Fork { child } => {
            guest.fork(m, pid, child)?;
            // A live `child` (its exit never recorded) was torn down
            // first: if it was running, it must be switched to again.
            if *running == Some(child) {
                *running = None;
            }
        }
        ProcEvent::Exec => guest.exec(m, pid)?,
        ProcEvent::Mmap {
            addr,
            len,
            prot,
            ref file,
            ..
        } => {
            guest.mmap(m, pid, addr, len, prot)?;
            // Only a guest tracking contents needs the file's key.
            if let (Some(f), true) = (file, guest.contents().is_some()) {
                guest.map_file(pid, addr, len, crate::guest::content::file_ref(f));
            }
        }
        ProcEvent::Munmap { addr, len } => guest.munmap(m, pid, addr, len)?,
        ProcEvent::Brk { addr } => guest.brk(m, pid, addr)?,
        ProcEvent::Mprotect { addr, len, prot } => guest.mprotect(m, pid, addr, len, prot)?,
        ProcEvent::Exit { .. } => {
            guest.exit(m, pid)?;
            if *running == Some(pid) {
                *running = None;
            }
        }
    }
    Ok(())
}

/// What one mode did on one workload.
#[derive(Clone, Debug, Serialize)]
pub struct ModeResult {
    /// The mode.
    pub mode: ModeKind,
    /// Event counts of the measured window.
    pub stats: Stats,
    /// Which instructions `stats` covers.
    pub window: WindowReport,
    /// Priced cycles.
    pub cycles: Cycles,
    /// For switching modes: switches, time in each mode, per-period series.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switching: Option<SwitchReport>,
}

/// Run one mode over `src` with `cfg`.
///
/// # Errors
/// Trace read errors and guest resource errors.
pub fn run_mode(
    kind: ModeKind,
    cfg: &Config,
    src: &mut dyn RecordSource,
    progress: &mut dyn FnMut(u64),
) -> Result<ModeResult, SimError> {
    kind.check(cfg)?;
    struct Go<'a> {
        cfg: &'a Config,
        src: &'a mut dyn RecordSource,
        progress: &'a mut dyn FnMut(u64),
    }
    impl ModeVisitor for Go<'_> {
        type Output = Result<(Stats, WindowReport, Option<SwitchReport>), SimError>;
        fn visit<M: Mode>(self, mode: M) -> Self::Output {
            let mut sim = Sim::new(mode, self.cfg);
            sim.run(self.src, &mut |_, _| {}, self.progress)?;
            let report = sim.finish();
            let (stats, window) = sim.measured()?;
            Ok((stats, window, report))
        }
    }
    let (stats, window, switching) = kind.with_mode(cfg, Go { cfg, src, progress })?;
    let cycles = CostModel::for_config(cfg).try_price(&stats)?;
    Ok(ModeResult {
        mode: kind,
        stats,
        window,
        cycles,
        switching,
    })
}
