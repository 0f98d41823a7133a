//! Threads that run single `query` calls. A search at a small ef takes tens of microseconds, and
//! libuv's pool added about as much again: its worker sleeps on a condition variable between
//! jobs, and waking a sleeping thread is the slow part of a round trip here. A query worker
//! instead spins for `SPIN` after each job, so a caller that awaits one query and sends the next
//! finds it awake; only then does it sleep. At most one worker spins at a time, so an idle
//! store costs one core for at most `SPIN` after its last query, and nothing after.
//!
//! Results are settled through the store's `Completions`, like commits.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::errors::{guarded, Failure, Outcome};

type Job = Box<dyn FnOnce() + Send>;

/// How long a worker stays awake for the next job: longer than the JS thread takes to settle a
/// result and send the next query (tens of microseconds), short enough to cost little idle.
const SPIN: Duration = Duration::from_micros(250);

struct Workers {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Workers spinning for work right now (at most one).
    spinning: AtomicUsize,
    /// Jobs queued and not yet taken; read without the lock by the spinning worker.
    queued: AtomicUsize,
}

struct Queue {
    jobs: VecDeque<Job>,
    sleeping: usize,
}

fn lock(m: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

static WORKERS: OnceLock<Result<&'static Workers, String>> = OnceLock::new();

/// The process's query workers, one per core, started on first use.
fn workers() -> Outcome<&'static Workers> {
    WORKERS
        .get_or_init(|| {
            let w: &'static Workers = Box::leak(Box::new(Workers {
                queue: Mutex::new(Queue { jobs: VecDeque::new(), sleeping: 0 }),
                wake: Condvar::new(),
                spinning: AtomicUsize::new(0),
                queued: AtomicUsize::new(0),
            }));
            let n = std::thread::available_parallelism().map_or(2, |n| n.get());
            for i in 0..n {
                std::thread::Builder::new()
                    .name(format!("cairn-query-{i}"))
                    .spawn(move || w.run())
                    .map_err(|e| format!("cannot start a query worker: {e}"))?;
            }
            Ok(w)
        })
        .clone()
        .map_err(Failure::internal)
}

/// Run `job` on a query worker; `done` receives its outcome there (a panic becomes an internal
/// error).
pub fn run<V: Send + 'static>(
    job: impl FnOnce() -> Outcome<V> + Send + 'static,
    done: impl FnOnce(Outcome<V>) + Send + 'static,
) -> Outcome<()> {
    let w = workers()?;
    let mut q = lock(&w.queue);
    q.jobs.push_back(Box::new(move || done(guarded(job))));
    let queued = w.queued.fetch_add(1, Ordering::SeqCst) + 1;
    // The spinning worker takes one job; any more wake a sleeping one.
    let wake = q.sleeping > 0 && queued > w.spinning.load(Ordering::SeqCst);
    drop(q);
    if wake {
        w.wake.notify_one();
    }
    Ok(())
}

impl Workers {
    fn run(&self) {
        loop {
            let job = {
                let mut q = lock(&self.queue);
                loop {
                    if let Some(job) = q.jobs.pop_front() {
                        self.queued.fetch_sub(1, Ordering::SeqCst);
                        break job;
                    }
                    // Checked under the lock, so a job queued after this point sees `sleeping`.
                    q.sleeping += 1;
                    q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                    q.sleeping -= 1;
                }
            };
            job();
            self.spin();
        }
    }

    /// Wait up to SPIN for a queued job without sleeping, if no other worker is already.
    fn spin(&self) {
        if self.spinning.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return;
        }
        let until = Instant::now() + SPIN;
        let mut turns = 0u32;
        while self.queued.load(Ordering::SeqCst) == 0 {
            std::hint::spin_loop();
            turns = turns.wrapping_add(1);
            if turns.is_multiple_of(64) && Instant::now() >= until {
                break;
            }
        }
        self.spinning.store(0, Ordering::SeqCst);
    }
}
