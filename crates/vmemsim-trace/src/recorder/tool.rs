//! The `vmemsim` Valgrind tool: built from C source at record time (once,
//! cached), run through a `VALGRIND_LIB` directory of its own.
//!
//! Lackey prints every access with its own `VG_(printf)`, and Valgrind
//! flushes each printf with one `write(2)`: 41 M writes for a `gzip` of
//! 100 KiB. The tool in `crates/vmemsim-trace/valgrind/vmemsim_main.c`
//! (GPL-2.0-or-later, a separate program: it links Valgrind's
//! `libcoregrind`) instruments exactly what `lackey --trace-mem=yes`
//! records and prints the same lines, but collects them in a 1 MiB buffer
//! written to Valgrind's log in whole chunks: before every system call,
//! whenever a thread stops running client code, before a fork and at exit,
//! so the `--trace-syscalls` lines and Valgrind's messages keep their
//! place among the accesses.
//!
//! **Building.** Valgrind installs what an out-of-tree tool needs (Debian:
//! the `valgrind` package has `/usr/include/valgrind/pub_tool_*.h` and
//! `/usr/lib/x86_64-linux-gnu/valgrind/libcoregrind-amd64-linux.a`,
//! `libvex-amd64-linux.a`, `libgcc-sup-amd64-linux.a`). The tool is
//! compiled with `gcc` the way Valgrind builds its own tools (the
//! `VGA_/VGO_/VGP_` platform macros, `-fno-builtin -fno-stack-protector
//! -fno-pie`, a static link without the C library at
//! `-Ttext-segment=0x58000000`, Valgrind's `valt_load_address`). It goes
//! to `$XDG_CACHE_HOME/vmemsim/valgrind-tool-KEY/` (else
//! `$HOME/.cache/...`), `KEY` being a hash of the Valgrind version, the
//! source, the flags and the input paths; the directory also holds
//! symbolic links to every file of Valgrind's own library directory
//! (`vgpreload_core`, the other tools), so with `VALGRIND_LIB` pointing at
//! it `--tool=vmemsim` is found and `--trace-children` children run it too
//! (Valgrind passes `VALGRIND_LIB` on). A built tool is used only after it
//! recorded `/bin/true` correctly (access lines and the closing line in
//! its log). It is amd64-Linux only; a 32-bit program under it fails to
//! start (record it with `--tool lackey`).
//!
//! When anything is missing (no compiler, no headers or archives, headers
//! of another Valgrind version, a failed build or self-test), [`prepare`]
//! says why and the recorder falls back to lackey.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The tool's C source, compiled at record time.
pub(super) const SOURCE: &str = include_str!("../../valgrind/vmemsim_main.c");
/// The tool's name (`--tool=vmemsim`; its file is `vmemsim-amd64-linux`).
pub(super) const TOOL_NAME: &str = "vmemsim";
/// The file Valgrind's launcher looks for in `VALGRIND_LIB`.
const TOOL_FILE: &str = "vmemsim-amd64-linux";
/// Written last into a finished tool directory.
const READY_FILE: &str = "vmemsim-tool-ready";
/// Valgrind's load address for tools on amd64 (`valt_load_address` in
/// `valgrind.pc`).
const LOAD_ADDRESS: &str = "0x58000000";
/// Compiler flags, after Valgrind's `Makefile.all.am` for amd64-linux.
const CFLAGS: &[&str] = &[
    "-O2",
    "-g",
    "-m64",
    "-std=gnu99",
    "-fno-strict-aliasing",
    "-fno-builtin",
    "-fno-stack-protector",
    "-fno-pie",
    "-fomit-frame-pointer",
    "-Wall",
    "-Wno-unused-parameter",
    "-DVGA_amd64=1",
    "-DVGO_linux=1",
    "-DVGP_amd64_linux=1",
    "-DVGPV_amd64_linux_vanilla=1",
];
/// Link flags, after Valgrind's `Makefile.tool.am` (`-static
/// -nodefaultlibs -nostartfiles -u _start`) and `link_tool_exe_linux`.
const LDFLAGS: &[&str] = &[
    "-m64",
    "-static",
    "-nodefaultlibs",
    "-nostartfiles",
    "-u",
    "_start",
    "-no-pie",
    "-Wl,--build-id=none",
];

/// A tool ready to run.
#[derive(Clone, Debug)]
pub(super) struct ToolDir {
    /// The directory to give Valgrind as `VALGRIND_LIB`.
    pub(super) lib: PathBuf,
}

/// What the build needs, found on this machine.
struct Inputs {
    /// Valgrind's own library directory (tools, `vgpreload_core`).
    libexec: PathBuf,
    /// `pub_tool_*.h`, `libvex*.h`, `valgrind.h`.
    include: PathBuf,
    /// `libcoregrind-amd64-linux.a`, `libvex-amd64-linux.a`, and
    /// `libgcc-sup-amd64-linux.a` where installed.
    archives: Vec<PathBuf>,
    /// The C compiler.
    cc: PathBuf,
}

/// One preparation per process at a time (test threads record at once).
static PREPARE: Mutex<()> = Mutex::new(());

/// The tool for `valgrind` (version string `version`, e.g.
/// `valgrind-3.19.0`): from the cache, or built now (a few seconds, once).
///
/// # Errors
/// Why the tool cannot be used here, as one sentence for the user.
pub(super) fn prepare(valgrind: &Path, version: &str) -> Result<ToolDir, String> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return Err("the vmemsim tool is built for amd64 Linux only".into());
    }
    let _guard = PREPARE.lock().unwrap_or_else(|e| e.into_inner());
    let inputs = find_inputs(valgrind, version)?;
    let key = {
        let mut text = String::new();
        for part in [version, SOURCE, LOAD_ADDRESS] {
            text.push_str(part);
            text.push('\0');
        }
        for f in CFLAGS.iter().chain(LDFLAGS) {
            text.push_str(f);
            text.push('\0');
        }
        for p in [&inputs.libexec, &inputs.include, &inputs.cc]
            .into_iter()
            .chain(&inputs.archives)
        {
            text.push_str(&p.to_string_lossy());
            text.push('\0');
        }
        xxhash_rust::xxh3::xxh3_64(text.as_bytes())
    };
    let base = cache_base().ok_or("neither XDG_CACHE_HOME nor HOME is set")?;
    let dir = base.join(format!("valgrind-tool-{key:016x}"));
    if dir.join(READY_FILE).is_file() && dir.join(TOOL_FILE).is_file() {
        return Ok(ToolDir { lib: dir });
    }
    std::fs::create_dir_all(&base)
        .map_err(|e| format!("cannot create the cache directory {}: {e}", base.display()))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = base.join(format!(
        ".valgrind-tool-build-{}-{nanos:x}",
        std::process::id()
    ));
    let built = build(&inputs, valgrind, &tmp);
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => {}
        // Another recorder finished the same build first: use its.
        Err(_) if dir.join(READY_FILE).is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(format!(
                "cannot move the built tool to {}: {e}",
                dir.display()
            ));
        }
    }
    Ok(ToolDir { lib: dir })
}

/// `$XDG_CACHE_HOME/vmemsim`, else `$HOME/.cache/vmemsim`.
fn cache_base() -> Option<PathBuf> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    nonempty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| nonempty("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|c| c.join("vmemsim"))
}

/// True for a directory made by [`prepare`] (so a `VALGRIND_LIB` already
/// pointing at one is not taken for Valgrind's own directory).
fn is_tool_dir(d: &Path) -> bool {
    d.join(READY_FILE).exists()
}

fn find_inputs(valgrind: &Path, version: &str) -> Result<Inputs, String> {
    // `/usr/bin/valgrind` -> prefix `/usr`.
    let real = std::fs::canonicalize(valgrind).unwrap_or_else(|_| valgrind.to_path_buf());
    let prefix = real
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("/usr"), Path::to_path_buf);
    let mut libexec_candidates: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("VALGRIND_LIB").filter(|v| !v.is_empty()) {
        let v = PathBuf::from(v);
        if !is_tool_dir(&v) {
            libexec_candidates.push(v);
        }
    }
    for p in [&prefix, Path::new("/usr"), Path::new("/usr/local")] {
        libexec_candidates.push(p.join("libexec/valgrind"));
        libexec_candidates.push(p.join("lib/valgrind"));
    }
    let libexec = libexec_candidates
        .into_iter()
        .find(|d| d.join("vgpreload_core-amd64-linux.so").is_file())
        .ok_or("Valgrind's amd64 library directory (vgpreload_core-amd64-linux.so) not found")?;

    let include = [&prefix, Path::new("/usr"), Path::new("/usr/local")]
        .iter()
        .map(|p| p.join("include/valgrind"))
        .find(|d| d.join("pub_tool_tooliface.h").is_file())
        .ok_or(
            "Valgrind's tool headers (include/valgrind/pub_tool_tooliface.h) not found \
             (Debian installs them with the valgrind package; elsewhere valgrind-devel)",
        )?;
    check_header_version(&include.join("valgrind.h"), version)?;

    let archive_dirs: Vec<PathBuf> = [&prefix, Path::new("/usr"), Path::new("/usr/local")]
        .iter()
        .flat_map(|p| {
            [
                p.join("lib/x86_64-linux-gnu/valgrind"),
                p.join("lib64/valgrind"),
                p.join("lib/valgrind"),
                p.join("libexec/valgrind"),
            ]
        })
        .collect();
    let archive_dir = archive_dirs
        .into_iter()
        .find(|d| {
            d.join("libcoregrind-amd64-linux.a").is_file()
                && d.join("libvex-amd64-linux.a").is_file()
        })
        .ok_or("Valgrind's libcoregrind-amd64-linux.a and libvex-amd64-linux.a not found")?;
    let mut archives = vec![
        archive_dir.join("libcoregrind-amd64-linux.a"),
        archive_dir.join("libvex-amd64-linux.a"),
    ];
    let sup = archive_dir.join("libgcc-sup-amd64-linux.a");
    if sup.is_file() {
        archives.push(sup);
    }
    let cc = which::which("gcc")
        .or_else(|_| which::which("cc"))
        .map_err(|_| "no C compiler (gcc or cc) on PATH".to_string())?;
    Ok(Inputs {
        libexec,
        include,
        archives,
        cc,
    })
}

/// The headers must be those of the Valgrind that runs: `valgrind.h`'s
/// `__VALGRIND_MAJOR__`/`__VALGRIND_MINOR__` against `valgrind-X.Y.Z`.
fn check_header_version(valgrind_h: &Path, version: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(valgrind_h)
        .map_err(|e| format!("cannot read {}: {e}", valgrind_h.display()))?;
    let define = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.trim().strip_prefix("#define")?.trim_start();
            let value = rest.strip_prefix(name)?;
            value.trim().parse::<u32>().ok()
        })
    };
    let headers = (define("__VALGRIND_MAJOR__"), define("__VALGRIND_MINOR__"));
    let mut running = version
        .trim()
        .trim_start_matches("valgrind-")
        .split(['.', '-'])
        .map(|s| s.parse::<u32>().ok());
    let running = (running.next().flatten(), running.next().flatten());
    match (headers, running) {
        ((Some(a), Some(b)), (Some(c), Some(d))) if (a, b) == (c, d) => Ok(()),
        ((Some(a), Some(b)), _) => Err(format!(
            "the tool headers in {} are of Valgrind {a}.{b}, but `{}` runs",
            valgrind_h.display(),
            version.trim()
        )),
        _ => Err(format!(
            "cannot read the Valgrind version from {}",
            valgrind_h.display()
        )),
    }
}

/// Compile, link, populate and self-test the tool in `dir` (created).
fn build(inputs: &Inputs, valgrind: &Path, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let src = dir.join("vmemsim_main.c");
    std::fs::write(&src, SOURCE).map_err(|e| format!("cannot write {}: {e}", src.display()))?;
    let obj = dir.join("vmemsim_main.o");
    let mut compile = Command::new(&inputs.cc);
    compile
        .args(CFLAGS)
        .arg("-I")
        .arg(&inputs.include)
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&obj);
    run_quiet(compile, "compiling the vmemsim Valgrind tool")?;
    let exe = dir.join(TOOL_FILE);
    let mut link = Command::new(&inputs.cc);
    link.arg("-o")
        .arg(&exe)
        .args(LDFLAGS)
        .arg(format!("-Wl,-Ttext-segment={LOAD_ADDRESS}"))
        .arg(&obj)
        .args(&inputs.archives)
        .arg("-lgcc");
    run_quiet(link, "linking the vmemsim Valgrind tool")?;
    let _ = std::fs::remove_file(&obj);

    // Valgrind's own files beside it, by symbolic link.
    let entries = std::fs::read_dir(&inputs.libexec)
        .map_err(|e| format!("cannot list {}: {e}", inputs.libexec.display()))?;
    for e in entries.flatten() {
        let name = e.file_name();
        if name.to_string_lossy().starts_with("vmemsim-") {
            continue;
        }
        std::os::unix::fs::symlink(e.path(), dir.join(&name))
            .map_err(|err| format!("cannot link {}: {err}", e.path().display()))?;
    }

    // Self-test: record /bin/true and look at the log.
    let log = dir.join("self-test.log");
    let mut log_arg = std::ffi::OsString::from("--log-file=");
    log_arg.push(&log);
    let status = Command::new(valgrind)
        .env("VALGRIND_LIB", dir)
        .arg(format!("--tool={TOOL_NAME}"))
        .arg("--vgdb=no")
        .arg(log_arg)
        .arg("/bin/true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", valgrind.display()))?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let fetches = text.lines().filter(|l| l.starts_with("I  ")).count();
    let closed = text.lines().any(|l| l.contains("Exit code:"));
    if !status.success() || fetches < 1000 || !closed {
        return Err(format!(
            "the built vmemsim tool failed its self-test (recording /bin/true: {status}, \
             {fetches} instruction lines, closing line {})",
            if closed { "present" } else { "missing" }
        ));
    }
    std::fs::write(
        dir.join(READY_FILE),
        format!("{}\n", env!("CARGO_PKG_VERSION")),
    )
    .map_err(|e| format!("cannot write {}: {e}", dir.display()))?;
    Ok(())
}

/// Run a build step; its error output becomes the message on failure.
fn run_quiet(mut cmd: Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run the compiler: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = err.lines().rev().take(6).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!(
        "{what} failed ({}): {}",
        out.status,
        tail.join(" | ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_version_must_match_the_running_valgrind() {
        let dir = std::env::temp_dir().join(format!("vmemsim-tool-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let h = dir.join("valgrind.h");
        std::fs::write(
            &h,
            "#define __VALGRIND_MAJOR__    3\n#define __VALGRIND_MINOR__    19\n",
        )
        .unwrap();
        assert_eq!(check_header_version(&h, "valgrind-3.19.0\n"), Ok(()));
        let e = check_header_version(&h, "valgrind-3.22.0").unwrap_err();
        assert!(
            e.contains("Valgrind 3.19") && e.contains("valgrind-3.22.0"),
            "{e}"
        );
        std::fs::write(&h, "no version here\n").unwrap();
        let e = check_header_version(&h, "valgrind-3.19.0").unwrap_err();
        assert!(e.contains("cannot read the Valgrind version"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
