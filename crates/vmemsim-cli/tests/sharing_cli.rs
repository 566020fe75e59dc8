//! `vmemsim host` with `[sharing]` end to end, on the shipped example:
//! the table's sharing lines, the JSON's `host.sharing`, the sharing
//! chart, determinism across -j, and bad `[sharing]` keys (exit 2, key
//! named).

use std::path::PathBuf;

mod common;
use common::vmemsim;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vmemsim-sharing-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/sharing/identical.toml")
}

#[test]
fn host_reports_sharing_in_table_json_and_svg() {
    let json = tmp("identical.json");
    let svg = tmp("svg");
    let cfg = example();
    let o = vmemsim(&[
        "host",
        "--config",
        cfg.to_str().unwrap(),
        "--no-alone",
        "--json",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
        "-j",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(table.contains("\nsharing: "), "{table}");
    assert!(
        table.contains("COW breaks") && table.contains("\nvm3 "),
        "{table}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let sh = &j["host"]["sharing"];
    assert!(sh["host"]["saved_frames"].as_u64().unwrap() > 0, "{sh}");
    assert_eq!(sh["vms"].as_array().unwrap().len(), 4);
    assert!(sh["scanner"]["visited"].as_u64().unwrap() > 0);
    assert!(!sh["series"].as_array().unwrap().is_empty());
    assert!(j["config"].as_str().unwrap().contains("[sharing]"));
    let chart = std::fs::read_to_string(svg.join("host-sharing.svg")).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("vm3"));
    let o1 = vmemsim(&[
        "host",
        "--config",
        cfg.to_str().unwrap(),
        "--no-alone",
        "-j",
        "1",
    ]);
    assert_eq!(String::from_utf8(o1.stdout).unwrap(), table, "-j1 = -j2");
}

#[test]
fn bad_sharing_keys_exit_2_naming_the_key() {
    let base = std::fs::read_to_string(example()).unwrap().replace(
        "../../tests",
        &format!("{}/../../tests", env!("CARGO_MANIFEST_DIR")),
    );
    for (i, (text, want)) in [
        (
            base.replace("rate_pages_per_s = 1e6", "rate_pages_per_s = 0"),
            "sharing.rate_pages_per_s",
        ),
        (base.replace("rate_pages_per_s = 1e6", "rate = 5"), "rate"),
    ]
    .iter()
    .enumerate()
    {
        let p = tmp(&format!("bad{i}.toml"));
        std::fs::write(&p, text).unwrap();
        let o = vmemsim(&["host", "--config", p.to_str().unwrap(), "--no-alone"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "{want}: {err}");
    }
}
