//! Independent simulations run on several cores, with progress.
//!
//! [`run`] takes a list of [`Task`]s (a label, the records it expects, and
//! the work), runs them on a rayon pool of `threads` workers, and returns
//! their results in input order, so what a command prints from them is the
//! same byte for byte whatever the thread count. `compare`, `run`, `bench
//! -j N` and `sweep` use it; a multi-VM `host` command can too.
//!
//! Tasks are started in input order (a shared counter, not rayon's
//! splitting), so a failing task is always started and the error reported
//! is the first one in input order, as with one thread. Once a task has
//! failed no further task starts; running ones finish.
//!
//! On a terminal, standard error shows one line per running task and an
//! overall bar with an ETA (in records when every task knows how many it
//! will read, else in tasks); elsewhere nothing is drawn.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The work of one task: it is given a progress callback taking the count
/// of records done so far.
pub type Work<'a, R> = Box<dyn FnOnce(&mut dyn FnMut(u64)) -> Result<R> + Send + 'a>;

/// One independent job.
pub struct Task<'a, R> {
    /// Shown on its progress line (e.g. `random / nested`).
    pub label: String,
    /// Records it will read, when known (a built-in workload's accesses, a
    /// `.vmt` footer's count): sizes its bar and the overall ETA.
    pub expected: Option<u64>,
    /// The work.
    pub work: Work<'a, R>,
}

/// Worker threads to use by default: the number of cores the process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Run `tasks` on `threads` workers (at least 1) and return their results
/// in input order.
///
/// # Errors
/// The first error in input order among the tasks that ran (with its
/// label as context), or a thread pool that cannot be built.
pub fn run<R: Send>(tasks: Vec<Task<'_, R>>, threads: usize) -> Result<Vec<R>> {
    let n = tasks.len();
    let progress = Progress::new(&tasks);
    let labels: Vec<String> = tasks.iter().map(|t| t.label.clone()).collect();
    let slots: Vec<Mutex<Option<Task<'_, R>>>> =
        tasks.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let results: Vec<Mutex<Option<Result<R>>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let workers = threads.clamp(1, n.max(1));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .context("starting the worker threads")?;
    pool.scope(|s| {
        for _ in 0..workers {
            s.spawn(|_| loop {
                // Checked before taking an index, so every index taken runs:
                // no task before a failing one is ever skipped.
                if failed.load(Ordering::SeqCst) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    break;
                }
                let task = lock(&slots[i]).take().expect("each task is taken once");
                let r = progress.run(task);
                if r.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                *lock(&results[i]) = Some(r);
            });
        }
    });
    progress.finish();
    let mut out = Vec::with_capacity(n);
    for (slot, label) in results.into_iter().zip(labels) {
        match slot.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(Ok(r)) => out.push(r),
            Some(Err(e)) => return Err(e.context(label)),
            // Tasks start in input order, so one not started comes after
            // a failure, which was returned above.
            None => anyhow::bail!("internal error: {label} was skipped without a failure"),
        }
    }
    Ok(out)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic in a task poisons nothing we rely on: the slot is plain data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The progress display: a line per running task above an overall bar.
struct Progress {
    multi: MultiProgress,
    overall: ProgressBar,
    /// The overall bar counts records (every task's total is known), else tasks.
    in_records: bool,
}

impl Progress {
    fn new<R>(tasks: &[Task<'_, R>]) -> Progress {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let records: Option<u64> = tasks.iter().map(|t| t.expected).sum();
        let in_records = records.is_some();
        let overall = multi.add(ProgressBar::new(records.unwrap_or(tasks.len() as u64)));
        overall.set_style(style(if in_records {
            "{prefix:>28} {wide_bar} {percent:>3}% {human_pos}/{human_len} records, ETA {eta} ({elapsed})"
        } else {
            "{prefix:>28} {wide_bar} {pos}/{len} tasks ({elapsed})"
        }));
        overall.set_prefix(format!("all {} tasks", tasks.len()));
        Progress {
            multi,
            overall,
            in_records,
        }
    }

    /// Run one task with its own line, feeding the overall bar.
    fn run<R>(&self, task: Task<'_, R>) -> Result<R> {
        let bar = match task.expected {
            Some(n) => {
                let b = ProgressBar::new(n);
                b.set_style(style(
                    "{prefix:>28} {bar:30} {percent:>3}% {human_pos}/{human_len} records, ETA {eta}",
                ));
                b
            }
            None => {
                let b = ProgressBar::new_spinner();
                b.set_style(style(
                    "{prefix:>28} {spinner} {human_pos} records ({elapsed})",
                ));
                b
            }
        };
        let bar = self.multi.insert_before(&self.overall, bar);
        bar.set_prefix(task.label);
        let mut last = 0;
        let r = (task.work)(&mut |done| {
            bar.set_position(done);
            if self.in_records {
                self.overall.inc(done.saturating_sub(last));
            }
            last = done;
        });
        if !self.in_records {
            self.overall.inc(1);
        } else if let Some(n) = task.expected {
            // A task may read fewer records than announced (a cut trace).
            self.overall.inc(n.saturating_sub(last));
        }
        bar.finish_and_clear();
        self.multi.remove(&bar);
        r
    }

    fn finish(&self) {
        self.overall.finish_and_clear();
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("valid progress template")
}

/// Records (accesses and events) in a `.vmt` trace, from its footer; `None`
/// for other formats, standard input, or a `.vmt` without a footer.
pub fn trace_records(path: &Path) -> Option<u64> {
    if path.as_os_str() == "-" {
        return None;
    }
    if vmemsim_trace::Format::detect(path).ok()? != vmemsim_trace::Format::Vmt {
        return None;
    }
    let reader = vmemsim_trace::vmt::Reader::open(path).ok()?;
    let counts = &reader.footer()?.counts;
    Some(counts.total_accesses() + counts.total_events())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn squares(n: u64, fail_at: Option<u64>) -> Vec<Task<'static, u64>> {
        (0..n)
            .map(|i| Task {
                label: format!("task {i}"),
                expected: Some(i),
                work: Box::new(move |progress: &mut dyn FnMut(u64)| {
                    progress(i);
                    if Some(i) == fail_at {
                        anyhow::bail!("failed at {i}");
                    }
                    Ok(i * i)
                }),
            })
            .collect()
    }

    #[test]
    fn results_come_back_in_input_order_whatever_the_threads() {
        let want: Vec<u64> = (0..40).map(|i| i * i).collect();
        for threads in [1, 2, 3, 8, 64] {
            assert_eq!(
                run(squares(40, None), threads).unwrap(),
                want,
                "{threads} threads"
            );
        }
    }

    #[test]
    fn the_error_is_the_first_failing_task_in_input_order() {
        for threads in [1, 2, 4] {
            let e = run(squares(20, Some(7)), threads).unwrap_err();
            assert_eq!(format!("{e:#}"), "task 7: failed at 7", "{threads} threads");
        }
    }

    #[test]
    fn no_tasks_no_results() {
        assert!(run(squares(0, None), 4).unwrap().is_empty());
    }
}
