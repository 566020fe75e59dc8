//! A search for traces on which a mutant changes the counters (TESTING.md,
//! "Mutation testing": finding a case for a mutant the oracle cannot see,
//! one that changes cost, not meaning). Ignored in the normal run.
//!
//! Each test writes one line per seed, `SEED DIGEST`, the digest a hash of
//! the full `Stats` of a seeded random trace (0 when the run panicked).
//! Run it on the code, apply the mutant, run it again and `diff` the two
//! files: the first differing seed is a trace to write an exact test on.
//!
//! ```sh
//! SEARCH_OUT=/tmp/a.txt cargo test -p vmemsim --test mutant_search -- --ignored one_vm
//! patch -p0 FILE -i MUTANT.diff
//! SEARCH_OUT=/tmp/b.txt cargo test -p vmemsim --test mutant_search -- --ignored one_vm
//! patch -R -p0 FILE -i MUTANT.diff; diff /tmp/a.txt /tmp/b.txt | head
//! ```
//!
//! `SEARCH_MODE` (default `shadow`), `SEARCH_OPS` (records per trace,
//! default 60), `SEARCH_SEEDS` (default 3000) and `SEARCH_SEED` (for
//! `print_one`: the seed whose records and counters it prints) choose.

mod common;

use std::hash::{Hash, Hasher};

use vmemsim::config::Config;
use vmemsim::hostsim::HostSim;
use vmemsim::sim::ModeKind;
use vmemsim::stats::Stats;
use vmemsim_trace::{AccessKind, ProcEvent, Record};

use common::{acc, anon_mmap, checked_stats, ev, replay, scanning_host};

fn var(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| v.parse().expect(name))
}

fn mode() -> ModeKind {
    ModeKind::parse(&std::env::var("SEARCH_MODE").unwrap_or_else(|_| "shadow".into()))
        .expect("SEARCH_MODE")
}

/// A seeded trace of `n` steps over `pages` pages at 0x7000_0000 (one
/// mapping per page): loads and stores (mapping the page first when it is
/// not mapped), munmaps, mprotects, a fork of process 1 (once), the
/// child's exit, and pairs of fetches (a quantum's end on a scanning host).
fn trace(seed: u64, n: u64, pages: u64) -> Vec<Record> {
    const BASE: u64 = 0x7000_0000;
    const CODE: u64 = 0x40_0000;
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let mut r = vec![acc(1, AccessKind::Fetch, CODE)];
    let mut mapped = vec![false; pages as usize];
    let mut child = None;
    for _ in 0..n {
        let page = next(pages);
        let va = BASE + page * 0x1000;
        let pid = match child {
            Some(c) if next(2) == 0 => c,
            _ => 1,
        };
        match next(14) {
            0 | 1 if mapped[page as usize] => {
                r.push(ev(
                    1,
                    ProcEvent::Munmap {
                        addr: va,
                        len: 0x1000,
                    },
                ));
                mapped[page as usize] = false;
            }
            2 => r.push(ev(
                1,
                ProcEvent::Mprotect {
                    addr: va,
                    len: 0x1000,
                    prot: 1 + next(3) as u32,
                },
            )),
            3 | 4 => r.extend([
                acc(1, AccessKind::Fetch, CODE),
                acc(1, AccessKind::Fetch, CODE),
            ]),
            5 if child.is_none() => {
                r.push(ev(1, ProcEvent::Fork { child: 2 }));
                child = Some(2);
            }
            6 if child.is_some() => {
                r.push(ev(2, ProcEvent::Exit { code: 0 }));
                child = None;
            }
            k => {
                if !mapped[page as usize] {
                    r.push(anon_mmap(1, va, 0x1000));
                    mapped[page as usize] = true;
                }
                let kind = if k % 3 == 0 {
                    AccessKind::Store
                } else {
                    AccessKind::Load
                };
                r.push(acc(pid, kind, va + 8 * next(2)));
            }
        }
    }
    r.push(acc(1, AccessKind::Fetch, CODE));
    r
}

fn digest(stats: &[&Stats]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for s in stats {
        format!("{s:?}").hash(&mut h);
    }
    h.finish()
}

/// Two VMs on a scanning host ([`scanning_host`]), traces `2 * seed` and
/// `2 * seed + 1` over four pages.
fn two_vms(seed: u64, n: u64) -> (Vec<Vec<Record>>, HostSim) {
    let vms = vec![trace(2 * seed, n, 4), trace(2 * seed + 1, n, 4)];
    let cfg = scanning_host(mode(), 2, "");
    let mut sim = HostSim::with_sources(&cfg, vms.iter().map(|r| replay(r)).collect());
    sim.run(&mut |_| {}).unwrap();
    (vms, sim)
}

fn write_digests(f: impl Fn(u64, u64) -> u64 + std::panic::RefUnwindSafe) {
    let (n, seeds) = (var("SEARCH_OPS", 60), var("SEARCH_SEEDS", 3000));
    let mut text = String::new();
    for seed in 0..seeds {
        let d = std::panic::catch_unwind(|| f(seed, n)).unwrap_or(0);
        text += &format!("{seed} {d:x}\n");
    }
    let out = std::env::var("SEARCH_OUT").expect("SEARCH_OUT: where to write the digests");
    std::fs::write(out, text).unwrap();
}

/// One VM alone, every access checked by the oracle, traces over 64 pages.
#[test]
#[ignore = "a search tool, run by hand (module docs)"]
fn one_vm() {
    let cfg = Config::default();
    write_digests(|seed, n| digest(&[&checked_stats(mode(), &cfg, &trace(seed, n, 64))]));
}

/// Two VMs on a scanning host: sharing, COW breaks and reuse.
#[test]
#[ignore = "a search tool, run by hand (module docs)"]
fn two_vms_sharing() {
    write_digests(|seed, n| {
        let (_, sim) = two_vms(seed, n);
        digest(&[&sim.vm(0).stats, &sim.vm(1).stats])
    });
}

/// The records and counters of `SEARCH_SEED` in `two_vms_sharing`.
#[test]
#[ignore = "a search tool, run by hand (module docs)"]
fn print_one() {
    let (vms, sim) = two_vms(var("SEARCH_SEED", 0), var("SEARCH_OPS", 60));
    for (i, r) in vms.iter().enumerate() {
        println!("VM {i}: {r:?}\n{:#?}", sim.vm(i).stats);
    }
}
