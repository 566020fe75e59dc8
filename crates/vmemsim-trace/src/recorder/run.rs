//! One recording: start Valgrind on the command, take its logs, write the
//! trace in causal order, and finish it (complete or truncated).

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::follow::watch;
use super::logdir::make_log_dir;
use super::order::Order;
use super::process::{in_child_before_exec, Terminal, Watchdog};
use super::valgrind::{find_program, find_valgrind, valgrind_version};
use super::{pipes, tool, Msg, RecordOptions, RecordSummary, RecordTool, Shared, LOG_FILES_ENV};
use crate::vmt::{self, FinishStatus};
use crate::{Record, TraceError};

/// Messages in flight between the readers and the writer.
const CHANNEL_BATCHES: usize = 64;
/// How long the recorder keeps reading after SIGINT/SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub(super) fn run(
    opts: &RecordOptions,
    keep: Option<&mut Vec<Record>>,
) -> Result<RecordSummary, TraceError> {
    let valgrind = find_valgrind(opts.valgrind.as_deref())?;
    if opts.command.is_empty() {
        return Err(TraceError::io(
            Path::new("<command>"),
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command to record"),
        ));
    }
    find_program(&opts.command[0])?;
    let version = valgrind_version(&valgrind)?;
    let command_text = opts
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let tool = match opts.tool {
        RecordTool::Lackey => None,
        RecordTool::Vmemsim => Some(tool::prepare(&valgrind, &version).map_err(|why| {
            TraceError::io(
                &valgrind,
                std::io::Error::other(format!("cannot use the vmemsim Valgrind tool: {why}")),
            )
        })?),
        RecordTool::Auto => match tool::prepare(&valgrind, &version) {
            Ok(t) => Some(t),
            Err(why) => {
                eprintln!(
                    "vmemsim record: recording with Valgrind lackey (slower): \
                     the vmemsim Valgrind tool cannot be used here: {why}"
                );
                None
            }
        },
    };
    let tool_name = if tool.is_some() {
        RecordTool::Vmemsim
    } else {
        RecordTool::Lackey
    };
    let creator = format!(
        "vmemsim record ({version} --tool={}): {command_text}",
        tool_name.name()
    );

    let dir = make_log_dir()?;
    let result = run_in(opts, &valgrind, tool.as_ref(), &dir, &creator, keep);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(
    opts: &RecordOptions,
    valgrind: &Path,
    tool: Option<&tool::ToolDir>,
    dir: &Path,
    creator: &str,
    keep: Option<&mut Vec<Record>>,
) -> Result<RecordSummary, TraceError> {
    let mut writer = vmt::Writer::create(&opts.output, creator)?;

    let sigint = Arc::new(AtomicBool::new(false));
    let sigterm = Arc::new(AtomicBool::new(false));
    let sighup = Arc::new(AtomicBool::new(false));
    let ids = [
        signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&sigint)),
        signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&sigterm)),
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&sighup)),
    ];
    let terminal = Terminal::foreground();

    let mut log_arg = OsString::from("--log-file=");
    log_arg.push(dir.join("%p.%n"));
    let mut cmd = Command::new(valgrind);
    let hand_terminal = terminal.is_some();
    let trap = if std::env::var_os(LOG_FILES_ENV).is_some() {
        None
    } else {
        pipes::Trap::new()
    };
    let trap_child = trap.as_ref().map(pipes::Trap::child_side);
    // SAFETY: the closure runs in the child between fork and exec and
    // calls only async-signal-safe functions (setpgid, prctl, sigprocmask,
    // tcsetpgrp, getpid, seccomp, sendmsg, close).
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            in_child_before_exec(hand_terminal);
            if let Some(t) = &trap_child {
                t.install();
            }
            Ok(())
        });
    }
    // The program's environment is the recorder's, sorted by name, with
    // `VALGRIND_LIB` naming the tool's directory when the vmemsim tool
    // runs: built the same way for both tools, so that (given the same
    // `VALGRIND_LIB`) the program gets the same environment, and so the
    // same stack addresses, under either.
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !(tool.is_some() && k == "VALGRIND_LIB"))
        .collect();
    if let Some(t) = tool {
        env.push(("VALGRIND_LIB".into(), t.lib.clone().into_os_string()));
    }
    env.sort();
    cmd.env_clear().envs(env);
    match tool {
        Some(_) => {
            cmd.arg(format!("--tool={}", tool::TOOL_NAME));
        }
        None => {
            cmd.args(["--tool=lackey", "--trace-mem=yes"]);
        }
    }
    let spawned = cmd
        .args(["--trace-syscalls=yes", "--trace-children=yes", "--vgdb=no"])
        .arg(log_arg)
        .args(&opts.command)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            for id in ids.into_iter().flatten() {
                signal_hook::low_level::unregister(id);
            }
            let _ = writer.finish(FinishStatus::Truncated {
                reason: format!("valgrind did not start: {e}"),
            });
            let _ = std::fs::remove_file(&opts.output);
            return Err(TraceError::io(valgrind, e));
        }
    };
    let root_pid = child.id();
    // The group's id is the root's pid (setpgid(0, 0) in the child).
    let group = libc::pid_t::try_from(root_pid).unwrap_or(0);
    let watchdog = Watchdog::start(group);
    // After the watchdog's fork, so that only the recorder holds it.
    let listener = trap.and_then(|t| t.listener(dir));

    let shared = Arc::new(Shared {
        root_done: AtomicBool::new(false),
        abort: AtomicBool::new(false),
        readers: AtomicUsize::new(0),
        log_pipes: AtomicUsize::new(0),
        log_files: AtomicUsize::new(0),
        // The program starts in the recorder's working directory.
        files: Arc::new(crate::lackey::FileIdentifier::new(
            std::env::current_dir().unwrap_or_default(),
        )),
    });
    // Bounded: when the writer falls behind, readers wait and the unread
    // text stays in the (disk) log files instead of piling up in memory.
    let (tx, rx) = mpsc::sync_channel::<Msg>(CHANNEL_BATCHES);
    let watcher = {
        let shared = Arc::clone(&shared);
        let dir = dir.to_path_buf();
        thread::spawn(move || watch(&dir, listener.as_ref(), &tx, &shared))
    };

    let mut order = Order::new(root_pid, keep);
    let mut first_error: Option<TraceError> = None;
    let mut exit_code = None;
    let mut stop_at: Option<Instant> = None;
    let mut stop_reason: Option<String> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(msg) => {
                if let Err(e) = order.handle(msg, &mut writer) {
                    // A write error: nothing more can be written.
                    shared.abort.store(true, Ordering::SeqCst);
                    first_error.get_or_insert(e);
                    break;
                }
                if let Some(e) = order.errors.pop() {
                    first_error.get_or_insert(e);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if exit_code.is_none() {
            if let Ok(Some(status)) = child.try_wait() {
                exit_code = Some(
                    status
                        .code()
                        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
                );
                shared.root_done.store(true, Ordering::SeqCst);
            }
        }
        if stop_at.is_none() {
            let sig = if sigterm.load(Ordering::SeqCst) {
                Some((libc::SIGTERM, "SIGTERM"))
            } else if sighup.load(Ordering::SeqCst) {
                Some((libc::SIGHUP, "SIGHUP"))
            } else if sigint.load(Ordering::SeqCst) {
                Some((libc::SIGINT, "SIGINT"))
            } else {
                None
            };
            if let Some((sig, name)) = sig {
                stop_at = Some(Instant::now() + STOP_GRACE);
                stop_reason = Some(format!("recording interrupted by {name}"));
                if exit_code.is_none() && group > 0 {
                    // SAFETY: kill(2) of the process group we created, whose
                    // leader we have not reaped.
                    unsafe { libc::kill(-group, sig) };
                }
            }
        }
        if let Some(t) = stop_at {
            if Instant::now() >= t && !shared.abort.load(Ordering::SeqCst) {
                shared.abort.store(true, Ordering::SeqCst);
                if exit_code.is_none() && group > 0 {
                    // SAFETY: as above.
                    unsafe { libc::kill(-group, libc::SIGKILL) };
                }
            }
        }
    }
    if exit_code.is_none() {
        if let Ok(status) = child.wait() {
            exit_code = Some(
                status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            );
        }
    }
    shared.root_done.store(true, Ordering::SeqCst);
    shared.abort.store(true, Ordering::SeqCst);
    if let Some(t) = terminal {
        t.take_back();
    }
    watchdog.dismiss();
    let _ = watcher.join();
    while let Ok(msg) = rx.try_recv() {
        if order.handle(msg, &mut writer).is_err() {
            break;
        }
    }
    for id in ids.into_iter().flatten() {
        signal_hook::low_level::unregister(id);
    }
    let flushed = order.flush_all(&mut writer);
    if let Err(e) = flushed {
        first_error.get_or_insert(e);
    }
    if let Some(e) = order.errors.pop() {
        first_error.get_or_insert(e);
    }

    let truncated = match (&first_error, stop_reason) {
        (Some(e), _) => Some(format!("recording failed: {e}")),
        (None, r) => r,
    };
    let status = match &truncated {
        Some(reason) => FinishStatus::Truncated {
            reason: reason.clone(),
        },
        None => FinishStatus::Complete { exit_code },
    };
    let ws = writer.finish(status)?;
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(RecordSummary {
        output: opts.output.clone(),
        processes: ws.processes,
        accesses: ws.accesses,
        events: ws.events,
        bytes_written: ws.bytes_written,
        exit_code,
        truncated,
        log_pipes: shared.log_pipes.load(Ordering::SeqCst),
        log_files: shared.log_files.load(Ordering::SeqCst),
        tool: if tool.is_some() {
            RecordTool::Vmemsim
        } else {
            RecordTool::Lackey
        },
    })
}
