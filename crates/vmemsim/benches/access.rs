#![allow(missing_docs)] // criterion_main! generates an undocumented main
//! Criterion benches: simulated accesses per second per mode on the
//! sequential and random built-in workloads (records pre-generated, so the
//! simulation loop alone is measured).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vmemsim::host::config::HostConfig;
use vmemsim::hostsim::HostSim;
use vmemsim::workload::{WorkloadKind, WorkloadSpec};
use vmemsim::{run_mode, Config, ModeKind};
use vmemsim_trace::{Record, RecordSource, TraceError};

struct Replay<'a>(&'a [Record], usize);

impl RecordSource for Replay<'_> {
    fn next_batch(&mut self, buf: &mut Vec<Record>, max: usize) -> Result<usize, TraceError> {
        let n = max.min(self.0.len() - self.1);
        buf.extend_from_slice(&self.0[self.1..self.1 + n]);
        self.1 += n;
        Ok(n)
    }
}

fn bench(c: &mut Criterion) {
    let cfg = Config::default();
    for kind in [WorkloadKind::Seq, WorkloadKind::Random] {
        let spec = WorkloadSpec {
            accesses: 1_000_000,
            footprint_mib: 64,
            ..WorkloadSpec::default_for(kind)
        };
        let mut records = Vec::new();
        let mut g = spec.source();
        while g.next_batch(&mut records, 1 << 16).unwrap() > 0 {}
        let mut group = c.benchmark_group(kind.name());
        group.throughput(Throughput::Elements(spec.accesses));
        group.sample_size(10);
        for mode in ModeKind::ALL {
            group.bench_function(mode.name(), |b| {
                b.iter(|| run_mode(mode, &cfg, &mut Replay(&records, 0), &mut |_| {}).unwrap())
            });
        }
        group.finish();
    }
}

/// One VM on a host with room to spare against `run_mode` on the same
/// records (issue 8: the host loop costs within 10% per access; see
/// BENCHMARKS.md for the instruction counts).
fn host_vs_run(c: &mut Criterion) {
    let spec = WorkloadSpec {
        accesses: 1_000_000,
        footprint_mib: 64,
        ..WorkloadSpec::default_for(WorkloadKind::Random)
    };
    let mut records = Vec::new();
    let mut g = spec.source();
    while g.next_batch(&mut records, 1 << 16).unwrap() > 0 {}
    // The host takes `'static` sources: the records live to the end.
    let records: &'static [Record] = Box::leak(records.into_boxed_slice());
    let mut group = c.benchmark_group("host_vs_run");
    group.throughput(Throughput::Elements(spec.accesses));
    group.sample_size(10);
    for mode in [ModeKind::Nested, ModeKind::Shadow] {
        let text = format!(
            "[host]\nmem_mib = 9216\n[[vm]]\nname = \"a\"\nworkload = \"random\"\nmode = \"{}\"\nmem_mib = 8192\n",
            mode.name()
        );
        let host = HostConfig::from_toml(&text, "bench", std::path::Path::new(".")).unwrap();
        let cfg = &host.vms[0].cfg;
        group.bench_function(format!("run/{}", mode.name()), |b| {
            b.iter(|| run_mode(mode, cfg, &mut Replay(records, 0), &mut |_| {}).unwrap())
        });
        group.bench_function(format!("host/{}", mode.name()), |b| {
            b.iter(|| {
                let src: Box<dyn RecordSource> = Box::new(Replay(records, 0));
                HostSim::with_sources(&host, vec![src])
                    .run(&mut |_| {})
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, host_vs_run);
criterion_main!(benches);
