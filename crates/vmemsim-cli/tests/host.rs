//! `vmemsim host` end to end: a small host with a real recording, its
//! JSON and SVG, determinism, and bad configurations (exit 2, key named).

use std::path::PathBuf;

mod common;
use common::vmemsim;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vmemsim-host-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn write_cfg(name: &str, text: &str) -> PathBuf {
    let p = tmp(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn small_host() -> String {
    let trace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/sh-echo-wc.vmt");
    format!(
        r#"
[host]
mem_mib = 192
vm_quantum_instructions = 5000
[[vm]]
name = "real"
trace = "{}"
mode = "nested"
mem_mib = 128
[[vm]]
name = "scan"
workload = "seq"
accesses = 40000
footprint_mib = 4
mode = "direct"
mem_mib = 128
"#,
        trace.display()
    )
}

#[test]
fn host_reports_per_vm_with_slowdown_json_and_svg() {
    let cfg = write_cfg("small.toml", &small_host());
    let json = tmp("small.json");
    let svg = tmp("svg");
    let args = [
        "host",
        "--config",
        cfg.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
        "-j",
        "2",
    ];
    let o = vmemsim(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(table.contains("2 VMs on 1 pCPU(s), 192 MiB"), "{table}");
    for want in ["real ", "scan ", "nested", "direct", "slowdown"] {
        assert!(table.contains(want), "{want}: {table}");
    }
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let vms = j["host"]["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 2);
    assert!(vms[0]["alone"]["cycles"].as_u64().unwrap() > 0);
    assert!(!j["host"]["series"].as_array().unwrap().is_empty());
    assert!(j["config"].as_str().unwrap().contains("[host]"));
    let chart = std::fs::read_to_string(svg.join("host-memory.svg")).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("real"));
    // An existing report is not replaced without --force (exit 2).
    let again = vmemsim(&args);
    assert_eq!(
        again.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // Same inputs, same report, whatever -j.
    let o2 = vmemsim(&[
        "host",
        "--config",
        cfg.to_str().unwrap(),
        "--no-alone",
        "-j",
        "1",
    ]);
    let t2 = String::from_utf8(o2.stdout).unwrap();
    let first_line = |t: &str| t.lines().next().unwrap().to_string();
    assert_eq!(first_line(&table), first_line(&t2));
    // No window asked: no window lines.
    assert!(!table.contains("measured ("), "{table}");
}

#[test]
fn bad_host_configs_exit_2_naming_the_key() {
    let base = small_host();
    let cases = [
        (
            base.replace("mem_mib = 192", "mem_mib = 192\nram = 1"),
            "ram",
        ),
        (
            base.replace("name = \"scan\"", "name = \"real\""),
            "vm[1].name",
        ),
        (
            base.replace("mem_mib = 128\n[[vm]]", "mem_mib = 9999\n[[vm]]"),
            "vm[0].mem_mib",
        ),
        ("[host]\nmem_mib = 100\n".to_string(), "at least one [[vm]]"),
        (
            format!("{base}[esx]\nshared_charge = \"half\"\n"),
            "unknown variant `half`, expected `fractional` or `full`",
        ),
        // It panicked at the first sampling period before session 11.
        (
            format!(
                "{}[esx]\nreclaim = \"balloon\"\n",
                base.replace("mem_mib = 192", "mem_mib = 192\npage_size = \"2m\"")
            ),
            "config key `host.page_size` = 2m: 4k with the ESX memory manager",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let cfg = write_cfg(&format!("bad{i}.toml"), text);
        let o = vmemsim(&["host", "--config", cfg.to_str().unwrap(), "--no-alone"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{want}: {err}");
        assert!(
            err.contains(want) && !err.contains("panicked"),
            "{want}: {err}"
        );
    }
}

/// `[esx]` on a host too small for its VMs (one a real recording): the
/// manager's table after the host's, its chart, its JSON, the same report
/// whatever -j, and a bad key refused naming it.
#[test]
fn esx_host_prints_the_manager_table_chart_and_json() {
    let text = small_host()
        .replace(
            "mem_mib = 192",
            "mem_mib = 24\nswap_mib = 512\nreserve_mib = 1",
        )
        .replace("mode = \"direct\"", "mode = \"shadow\"")
        .replace("footprint_mib = 4", "footprint_mib = 24")
        + "[esx]\ntime_scale = 1e-6\nhigh_pct = 30\nsoft_pct = 20\nhard_pct = 5\nlow_pct = 2\n";
    let cfg = write_cfg("esx.toml", &text);
    let svg = tmp("esx-svg");
    let json = |j: &str, name: &str| {
        let p = tmp(name);
        let o = vmemsim(&[
            "host",
            "--config",
            cfg.to_str().unwrap(),
            "--no-alone",
            "--force",
            "-j",
            j,
            "--json",
            p.to_str().unwrap(),
            "--svg",
            svg.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (
            String::from_utf8(o.stdout).unwrap(),
            std::fs::read_to_string(p).unwrap(),
        )
    };
    let (table, j1) = json("1", "esx1.json");
    for want in [
        "ESX memory manager: idle tax 0.75",
        "target MiB",
        "states: high",
    ] {
        assert!(table.contains(want), "{want}: {table}");
    }
    let (_, j2) = json("2", "esx2.json");
    assert_eq!(j1, j2, "same report whatever -j");
    let j: serde_json::Value = serde_json::from_str(&j1).unwrap();
    let e = &j["host"]["esx"];
    assert!(!e["series"].as_array().unwrap().is_empty());
    assert_eq!(e["counters"].as_array().unwrap().len(), 2);
    assert!(j["config"].as_str().unwrap().contains("[esx]"));
    let chart = std::fs::read_to_string(svg.join("esx-memory.svg")).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("real allocation"));
    let bad = write_cfg(
        "bad-esx.toml",
        &text.replace("time_scale = 1e-6", "idle_tax = 1.5"),
    );
    let o = vmemsim(&["host", "--config", bad.to_str().unwrap(), "--no-alone"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("esx.idle_tax"));
}

/// `--warmup-instructions` / `--sim-instructions` on `vmemsim host`: each
/// VM is measured on its own instructions (the table says which), and the
/// flags override `[measure]` of the file.
#[test]
fn host_measures_each_vm_in_the_window_of_the_flags() {
    let text = small_host().replace(
        "[[vm]]\nname = \"real\"",
        "[measure]\nwarmup_instructions = 1\n[[vm]]\nname = \"real\"",
    );
    let cfg = write_cfg("window.toml", &text);
    let json = tmp("window.json");
    let o = vmemsim(&[
        "host",
        "--config",
        cfg.to_str().unwrap(),
        "--warmup-instructions",
        "2000",
        "--sim-instructions",
        "3000",
        "--json",
        json.to_str().unwrap(),
        "--force",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8(o.stdout).unwrap();
    for name in ["real", "scan"] {
        let want = format!("  {name}: instructions 2000..5000 (warm-up 2000, 3000 measured)");
        assert!(table.contains(&want), "{want}: {table}");
    }
    assert!(table.contains("host time and memory series: the whole run"));
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for v in j["host"]["vms"].as_array().unwrap() {
        assert_eq!(v["stats"]["instructions"], 3000);
        assert_eq!(v["window"]["warmup_instructions"], 2000);
        // The VM alone ran the same window.
        assert!(v["alone"]["cycles"].as_u64().unwrap() > 0);
    }
}

#[test]
fn config_dump_host_shows_every_host_key_with_its_default() {
    let o = vmemsim(&["config", "--dump", "--host"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = String::from_utf8(o.stdout).unwrap();
    for key in [
        "[host]",
        "mem_mib = 1024",
        "vm_quantum_instructions = 100000",
        "[esx]",
        "idle_tax = 0.75",
        "sample_clock = \"host\"",
        "[[vm]]",
        "[measure]",
    ] {
        assert!(t.contains(key), "{key}: {t}");
    }
    // A host file, resolved.
    let cfg = write_cfg("dump.toml", &small_host());
    let o = vmemsim(&[
        "config",
        "--dump",
        "--host",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let t = String::from_utf8(o.stdout).unwrap();
    assert!(
        t.contains("mem_mib = 192") && t.contains("name = \"scan\""),
        "{t}"
    );
}
