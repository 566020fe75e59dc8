//! EPT entries carry rights and the 2-D walk honours them; scoped flushes
//! (INVEPT / INVVPID single-context) drop one VM's entries only.

mod common;

use vmemsim::addr::Gpfn;
use vmemsim::config::Config;
use vmemsim::guest::softwalk;
use vmemsim::hv::Nested;
use vmemsim::mmu::{Asid, TlbEntry, TlbLevel};
use vmemsim::pte::{ept, x86};
use vmemsim::sim::Sim;
use vmemsim::stats::ExitReason;
use vmemsim_trace::{AccessKind, ProcEvent, Record};

use common::{acc, ev};

const A: u64 = 0x7f00_0000_0000;

fn run(sim: &mut Sim<Nested>, records: &[Record]) {
    for r in records {
        match r {
            Record::Access(a) => sim.access(a, &mut |_, _| {}).unwrap(),
            Record::Event(e) => sim.event(e.pid, &e.kind).unwrap(),
        }
    }
}

/// A nested guest that mapped page A and stored to it; returns A's gPFN.
fn stored_once(sim: &mut Sim<Nested>) -> Gpfn {
    let mmap = ProcEvent::Mmap {
        addr: A,
        len: 1 << 20,
        prot: 3,
        flags: 0x22,
        file: None,
    };
    run(sim, &[ev(1, mmap), acc(1, AccessKind::Store, A)]);
    let root = sim.guest.current().unwrap().root;
    Gpfn(
        softwalk::translate(&sim.guest.mem, root, 4, A)
            .unwrap()
            .gpfn,
    )
}

/// Replace `gpfn`'s EPT leaf by `leaf` and flush the VM's cached mappings
/// (what a hypervisor does: change the entry, then INVEPT single-context).
fn set_ept(sim: &mut Sim<Nested>, gpfn: Gpfn, leaf: u64) {
    sim.machine.vm.ept_set(&mut sim.host, gpfn, leaf);
    let (tag, vpid) = (sim.machine.vm.ept_tag, sim.machine.vm.vpid);
    sim.hw.invept_single(tag, vpid);
}

#[test]
fn read_only_ept_entry_faults_stores_not_loads() {
    let mut sim = Sim::new(Nested, &Config::default());
    let g = stored_once(&mut sim);
    let h = sim.machine.vm.p2m(g).unwrap();
    set_ept(&mut sim, g, x86::make(h.0, ept::R | ept::X | ept::WB));
    let before = sim.stats().clone();
    run(&mut sim, &[acc(1, AccessKind::Load, A)]);
    let d = sim.stats().since(&before);
    assert_eq!(d.total_exits(), 0, "a load needs only R");
    assert_eq!(d.tlb_misses, 1);
    // The TLB entry of that load may not serve a store: the guest PTE is
    // dirty and writable, but the EPT grants no W.
    let before = sim.stats().clone();
    run(&mut sim, &[acc(1, AccessKind::Store, A)]);
    let d = sim.stats().since(&before);
    assert_eq!(d.tlb_misses, 1, "the load's entry lacks write rights");
    assert_eq!(d.exits_for(ExitReason::EptViolation), 1);
    assert_eq!(d.total_exits(), 1);
    assert_eq!(
        d.guest_page_faults, 0,
        "an EPT fault is the host's, not the guest's"
    );
    assert_eq!(d.host_frames_backed, 0, "the frame stays where it was");
    let e = sim.machine.vm.ept_entry(&sim.host, g);
    assert_eq!(e & ept::RWX, ept::RWX, "the host re-granted W");
    assert_eq!(x86::frame(e), h.0);
}

#[test]
fn not_present_ept_entry_is_an_ept_violation_on_any_access() {
    let mut sim = Sim::new(Nested, &Config::default());
    let g = stored_once(&mut sim);
    let h = sim.machine.vm.p2m(g).unwrap();
    set_ept(&mut sim, g, 0);
    let before = sim.stats().clone();
    run(&mut sim, &[acc(1, AccessKind::Load, A)]);
    let d = sim.stats().since(&before);
    // One walk ends in the violation, the walk after the exit succeeds.
    assert_eq!(d.exits_for(ExitReason::EptViolation), 1);
    assert_eq!(d.walks, 2);
    assert_eq!(x86::frame(sim.machine.vm.ept_entry(&sim.host, g)), h.0);
}

#[test]
fn scoped_flushes_keep_other_vms_entries() {
    let mut sim = Sim::new(Nested, &Config::default());
    let hw = &mut sim.hw;
    let e = TlbEntry::new(1, 2, true, true);
    let (a, b) = (Asid::new(1, 7), Asid::new(2, 7));
    hw.tlbs
        .insert(a, 0x5000, vmemsim::addr::PageSize::Size4K, false, e);
    hw.tlbs
        .insert(b, 0x5000, vmemsim::addr::PageSize::Size4K, false, e);
    hw.pwc.insert(a, 0x5000, 2, 9);
    hw.pwc.insert(b, 0x5000, 2, 9);
    hw.invvpid_single(1);
    assert_eq!(hw.tlbs.lookup(a, 0x5000, false, false).0, TlbLevel::Miss);
    assert_eq!(hw.tlbs.lookup(b, 0x5000, false, false).0, TlbLevel::L1);
    assert_eq!(hw.pwc.lookup(a, 0x5000, 4), None);
    assert_eq!(hw.pwc.lookup(b, 0x5000, 4), Some((1, 9)));
    // INVEPT of VM 2's EPT (tag 2) drops its combined mappings too.
    hw.invept_single(2, 2);
    assert_eq!(hw.tlbs.lookup(b, 0x5000, false, false).0, TlbLevel::Miss);
}

/// An EPT entry without X: a load's TLB entry may not serve a fetch of
/// the same page, although the guest PTE allows execution. Page A mapped
/// read-write-execute and stored to; its EPT leaf set to R|W: a load
/// walks and exits nothing; a fetch misses the TLB (the STLB entry the
/// load filled lacks execute rights), walks, and takes an EPT violation,
/// after which the host grants X again. (Kills the 2-D walk's
/// `granted & ept::X != 0` as `^`, which let the load's entry serve the
/// fetch.)
#[test]
fn no_execute_ept_entry_faults_fetches_not_loads() {
    let mut sim = Sim::new(Nested, &Config::default());
    let mmap = ProcEvent::Mmap {
        addr: A,
        len: 1 << 20,
        prot: 7,
        flags: 0x22,
        file: None,
    };
    run(&mut sim, &[ev(1, mmap), acc(1, AccessKind::Store, A)]);
    let root = sim.guest.current().unwrap().root;
    let g = Gpfn(
        softwalk::translate(&sim.guest.mem, root, 4, A)
            .unwrap()
            .gpfn,
    );
    let h = sim.machine.vm.p2m(g).unwrap();
    set_ept(&mut sim, g, x86::make(h.0, ept::R | ept::W | ept::WB));
    let before = sim.stats().clone();
    run(&mut sim, &[acc(1, AccessKind::Load, A)]);
    let d = sim.stats().since(&before);
    assert_eq!(
        (d.total_exits(), d.tlb_misses),
        (0, 1),
        "a load needs only R"
    );
    let before = sim.stats().clone();
    run(&mut sim, &[acc(1, AccessKind::Fetch, A)]);
    let d = sim.stats().since(&before);
    assert_eq!(d.tlb_misses, 1, "the load's entry lacks execute rights");
    assert_eq!(d.exits_for(ExitReason::EptViolation), 1);
    assert_eq!((d.total_exits(), d.guest_page_faults), (1, 0));
    assert_eq!(sim.machine.vm.ept_entry(&sim.host, g) & ept::RWX, ept::RWX);
}
