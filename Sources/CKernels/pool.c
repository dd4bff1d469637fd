/*
 * A fork-join pool for the layers' parallel loops. One loop of a training step lasts tens of
 * microseconds to a few milliseconds, and a step runs a few hundred of them back to back; a
 * worker that sleeps between them costs a wake-up (tens of microseconds in a virtual machine,
 * plus a futex round trip and a context switch each way) per loop. Here workers stay awake
 * for a while after a loop, spinning on a generation counter, and fall asleep on a condition
 * variable only after SPIN_NS without work; between steps, or with one thread per rank, they
 * sleep and cost nothing. A loop started while another runs (from another thread) or from
 * inside a loop runs on the calling thread alone.
 */
#include "ckernels.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define PAUSE() _mm_pause()
#else
#define PAUSE() ((void)0)
#endif

enum { MAX_WORKERS = 63 };
/* Spin this long after a loop before sleeping: with 200 µs a two-thread step of the main job
 * still put the worker to sleep about 35 times (futex calls per step: 35 against 2.6 with 2 ms). */
static const long SPIN_NS = 2000 * 1000;

static pthread_mutex_t owner = PTHREAD_MUTEX_INITIALIZER;  /* held by the thread running a loop */
static pthread_mutex_t sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static int started = 0;                                     /* workers created (under owner) */
/* The loop's generation (high 32 bits) and its next unclaimed index (low 32): a worker claims
 * an index with a compare-and-swap, so it never takes one of a later loop by mistake. */
static _Atomic unsigned long ticket = 0;
static _Atomic int sleepers = 0, done_count = 0, active = 0; /* active: workers taking part */
static _Atomic(tk_task_fn) job_fn;
static _Atomic(void *) job_ctx;
static _Atomic int job_count;
static _Thread_local int inside = 0;
static _Thread_local int self_index = 0;                    /* 0: a caller; workers 1, 2, … */

int tk_thread_index(void) { return self_index; }

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

/* Claims and runs indices of loop `gen` until none is left (or a later loop has begun). */
static void drain(unsigned long gen) {
    int ran = 0;
    for (;;) {
        unsigned long t = atomic_load_explicit(&ticket, memory_order_acquire);
        if (t >> 32 != gen) break;
        int i = (int)(t & 0xffffffffUL);
        int count = atomic_load_explicit(&job_count, memory_order_relaxed);
        tk_task_fn fn = atomic_load_explicit(&job_fn, memory_order_relaxed);
        void *ctx = atomic_load_explicit(&job_ctx, memory_order_relaxed);
        if (i >= count) break;
        if (!atomic_compare_exchange_weak_explicit(&ticket, &t, t + 1, memory_order_acq_rel, memory_order_acquire))
            continue;
        fn(ctx, i);
        ran++;
    }
    if (ran) atomic_fetch_add_explicit(&done_count, ran, memory_order_release);
}

/* The generation before the loop that started each worker (written before its thread starts):
 * read from the ticket once the thread runs, that loop's generation may already be there, and
 * the worker would sit the loop out. */
static unsigned long start_gen[MAX_WORKERS];

static void *worker(void *arg) {
    int id = (int)(long)arg;
    unsigned long seen = start_gen[id];
    inside = 1;
    self_index = id + 1;
    for (;;) {
        long idle_since = now_ns();
        unsigned long g;
        int spins = 0;
        while ((g = atomic_load_explicit(&ticket, memory_order_acquire) >> 32) == seen) {
            PAUSE();
            if (++spins % 1024 == 0 && now_ns() - idle_since > SPIN_NS) {
                pthread_mutex_lock(&sleep_lock);
                atomic_fetch_add(&sleepers, 1);
                while ((g = atomic_load_explicit(&ticket, memory_order_acquire) >> 32) == seen)
                    pthread_cond_wait(&wake, &sleep_lock);
                atomic_fetch_sub(&sleepers, 1);
                pthread_mutex_unlock(&sleep_lock);
                break;
            }
        }
        seen = g;
        if (id < atomic_load_explicit(&active, memory_order_acquire)) drain(g);
    }
    return 0;
}

void tk_parallel(int count, int threads, tk_task_fn fn, void *ctx) {
    if (count <= 0) return;
    if (threads > count) threads = count;
    if (threads > MAX_WORKERS + 1) threads = MAX_WORKERS + 1;
    if (threads <= 1 || inside || pthread_mutex_trylock(&owner) != 0) {
        for (int i = 0; i < count; i++) fn(ctx, i);
        return;
    }
    while (started < threads - 1) {
        pthread_t t;
        start_gen[started] = atomic_load_explicit(&ticket, memory_order_relaxed) >> 32;
        if (pthread_create(&t, 0, worker, (void *)(long)started) != 0) break;
        pthread_detach(t);
        started++;
    }
    atomic_store_explicit(&job_fn, fn, memory_order_relaxed);
    atomic_store_explicit(&job_ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&job_count, count, memory_order_relaxed);
    atomic_store_explicit(&done_count, 0, memory_order_relaxed);
    atomic_store_explicit(&active, threads - 1 < started ? threads - 1 : started, memory_order_relaxed);
    unsigned long gen = (atomic_load_explicit(&ticket, memory_order_relaxed) >> 32) + 1;
    /* (under sleep_lock, so that a worker deciding to sleep either sees it or is woken) */
    pthread_mutex_lock(&sleep_lock);
    atomic_store_explicit(&ticket, gen << 32, memory_order_release);
    if (atomic_load(&sleepers) > 0) pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&sleep_lock);
    inside = 1;
    drain(gen);
    inside = 0;
    while (atomic_load_explicit(&done_count, memory_order_acquire) < count) PAUSE();
    pthread_mutex_unlock(&owner);
}
