"""Dispatch policy: which job gives the next chunk, and how big it is.

Pure bookkeeping, no threads and no I/O; only the master thread calls it.

Chunk sizing (when the caller gives no ``chunksize``): every function starts
with one item per chunk.  Workers report how long each chunk computed; from
the per-item estimate the chunk grows (at most ``GROWTH`` times per step) until
a chunk takes about ``TARGET_CHUNK_SECONDS``.  Two caps keep long or uneven
tasks evenly spread:

* with many workers the aim rises (``CHUNK_SECONDS_PER_WORKER``): the master's
  round trips must not pile up when hundreds of IO workers finish at once;
* a chunk never takes more than ``1 / (TAPER * workers)`` of what a job still
  has to give, so the last chunks shrink and no worker is left with a
  straggler chunk while others idle;
* items slower than the target run one per chunk; a second chunk is queued
  behind a busy worker (so it never idles for a round trip) only while the
  job is far from its end, so the last items always go to whichever worker
  frees up first (see :meth:`Scheduler.can_prefetch`).

Steady functions are the exception to the last two rules.  Besides the mean,
the scheduler learns how much a function's durations vary; when they hardly do
(``STEADY_SPREAD``), every busy worker ends its chunk when expected, so

* a finite job's chunks aim longer (``STEADY_TARGET_SECONDS``): the taper
  still evens out its end, and fewer round trips leave more of the cores to
  the work;
* with many workers, a chunk takes an even share of what is left
  (``STEADY_TAPER``), computed once per round of ``workers`` chunks, instead of
  halving down to single items; the last round's shares may exceed the aim
  by half (``STEADY_STRETCH``) rather than leave a round of single items;
* for items shorter than the target, the tail is queued behind busy workers'
  chunks of the same job too, and no worker waits a round trip for its last
  items.

The last two matter most for hundreds of thread or async workers: started together,
they finish together, and each round trip costs the master time under the GIL
they all share.  Heavy-tailed durations never count as steady.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Hashable

from ._jobs import Job

__all__ = ("Scheduler",)

#: Aim for chunks computing this long.  Larger amortises the ~50-100 µs round
#: trip of a chunk better (prefetching hides most of it anyway); smaller
#: balances better, above all at the end of a lazy stream, whose length is
#: unknown.
TARGET_CHUNK_SECONDS = 0.005
#: A steady function's finite job (a ``map``, not an ``imap``) aims for chunks
#: this long instead (see Scheduler._aim).  2 process workers on 2 cores
#: running 10 ms tasks one per chunk were 1.5-2 % slower than with 50 ms chunks
#: (up to 5 % on a loaded machine: the master's wake-ups take a core from a
#: worker); 200 ms chunks gained nothing more.  The cost: items of a chunk
#: whose worker dies are retried, so more of them may run twice.
STEADY_TARGET_SECONDS = 0.05
#: With many workers, aim higher: this many seconds per worker (200 threads:
#: 100 ms chunks).  Every finished chunk costs the master a round trip of
#: about 15-25 µs, and for thread and async workers that work holds the GIL
#: they all share: W workers finishing a chunk every W * 0.5 ms keep the
#: master's share of the GIL near 5 %.
CHUNK_SECONDS_PER_WORKER = 0.0005
#: A worker kind that costs something per chunk (a Dask cluster: milliseconds)
#: gets chunks this many times that cost, so it stays about 5 % of the work.
OVERHEAD_RATIO = 20
#: Chunk size may grow by at most this factor per result, so one unusually
#: fast first item cannot make a huge chunk of slow ones.
GROWTH = 8
#: A chunk takes at most remaining / (TAPER * workers) items of a finite job ...
TAPER = 2
#: ... unless that is less than this much work.
TAPER_FLOOR_SECONDS = 0.001
#: With many workers (more than TARGET_CHUNK_SECONDS / CHUNK_SECONDS_PER_WORKER),
#: a steady function's chunks take remaining / (STEADY_TAPER * workers) items,
#: the same for every chunk of a round of ``workers`` chunks: its items all
#: take as long, so even shares end together, and halving down to single items
#: would cost each worker round trips, hundreds of which queue for the master
#: when the workers finish together.  Few workers keep TAPER: their round trips
#: are cheap, and halving also absorbs workers running at different speeds.
STEADY_TAPER = 1
#: ... and such an even share may exceed the chunk aim by half: when the share
#: ends the job in this round (its last round), one chunk a worker beats a chunk
#: at the aim and a second round of single items (200 IO workers, 10 ms waits:
#: 10 items each, not 9 and then 1), whose extra chunk per worker costs the
#: master a dispatch while the workers are all starting.
STEADY_STRETCH = 1.5
#: A second chunk is queued to a busy worker only for items known to take at
#: most this long (a queued item waits for the one before it; past this the
#: round trip it saves is negligible anyway) ...
PREFETCH_MAX_SECONDS = 0.1
#: ... and only while a finite job has more than this many items left per
#: worker: the tail is handed out one chunk at a time to whichever worker is
#: free, so no item waits behind a long one at the end.
PREFETCH_TAIL = 1
#: A chunk's pickled arguments stay under about this many bytes: large
#: arguments are cheap to compute on but costly to hold and move, and the
#: read-ahead window of a lazy map is a few chunks' bytes per worker.
CHUNK_BYTES = 4 << 20
#: A prefetch (a second chunk for a busy worker) considers at most this many
#: jobs: single calls never prefetch, and a scan of thousands per busy worker
#: would make many pending submits quadratic.
PREFETCH_LOOKS = 8
#: Learned durations are kept for this many functions.
MAX_ESTIMATES = 1024
#: Weight of the newest measurement in the moving average.
SMOOTHING = 0.3
#: A function is steady while the moving average of its samples' relative
#: deviation (|sample - mean| / mean) stays under this.  A new function starts
#: at 1 (unknown: not steady), so it takes about 20 consistent chunks to
#: qualify; heavy-tailed durations (Pareto 1.5) stay well above it.
STEADY_SPREAD = 0.15
#: Weight of the newest sample's deviation in that average: small, so a run
#: of a few similar items of a heavy-tailed function does not make it steady.
SPREAD_SMOOTHING = 0.1


class _Estimate:
    """What is known of one function's items: mean duration and how much it varies."""

    __slots__ = ("per_item", "spread")

    def __init__(self, per_item: float) -> None:
        self.per_item = per_item  # seconds, moving average (SMOOTHING)
        self.spread = 1.0  # relative deviation, moving average (SPREAD_SMOOTHING)

    def add(self, sample: float) -> None:
        old = self.per_item
        deviation = abs(sample - old) / old if old > 0 else float(sample > 0)
        self.spread += SPREAD_SMOOTHING * (deviation - self.spread)
        self.per_item = old + SMOOTHING * (sample - old)


class Scheduler:
    """Round-robin over active jobs, with adaptive chunk sizes per function."""

    def __init__(self, workers: int, min_chunk: int = 1) -> None:
        self.workers = workers
        #: chunk duration aimed for (see CHUNK_SECONDS_PER_WORKER and OVERHEAD_RATIO)
        self.target = max(TARGET_CHUNK_SECONDS, workers * CHUNK_SECONDS_PER_WORKER)
        #: what the worker kind spends per chunk besides running it (see set_costs)
        self.overhead = 0.0
        #: chunks that run at once (the taper's divisor): the workers, or a cluster's threads
        self.parallel = workers
        #: hybrid workers run this many items of a chunk at once: never fewer
        self.min_chunk = min_chunk
        self._jobs: deque[Job] = deque()
        self._estimates: OrderedDict[Hashable, _Estimate] = OrderedDict()
        self._sizes: dict[Hashable, float] = {}  # pickled bytes per item (process kinds)
        self._last_size: dict[int, int] = {}  # id(job) -> last adaptive chunk size
        self._rounds: dict[int, tuple[int, int]] = {}  # id(job) -> (share, chunks left)
        #: Chunks given back after their worker died without running them.
        self._requeued: deque[tuple[Job, int, list[object]]] = deque()

    def set_costs(self, workers: int, overhead: float, parallel: int | None = None) -> None:
        """The pool's size, its kind's cost per chunk, how many chunks run at once.

        Chunks aim to run ``OVERHEAD_RATIO`` times that cost, so that it stays a
        small part of the work, and the tail stops tapering at twice it.
        """
        self.workers = workers
        self.overhead = overhead
        self.parallel = workers if parallel is None else parallel
        base = max(TARGET_CHUNK_SECONDS, workers * CHUNK_SECONDS_PER_WORKER)
        self.target = max(base, OVERHEAD_RATIO * overhead)

    def add(self, job: Job) -> None:
        """Queue a job; its items are given out fairly with the others."""
        self._jobs.append(job)

    def requeue(self, job: Job, start: int, items: list[object]) -> None:
        """Give a chunk back (its worker died before running it); it goes first."""
        self._requeued.append((job, start, items))

    def clear_requeued(self) -> list[Job]:
        """Drop re-queued chunks; return their jobs (the caller must settle them)."""
        jobs = [job for job, _, _ in self._requeued]
        self._requeued.clear()
        return jobs

    @property
    def jobs(self) -> list[Job]:
        """Jobs that may still give items (including re-queued chunks' jobs)."""
        return list(self._jobs) + [job for job, _, _ in self._requeued]

    def idle(self) -> bool:
        """True when no job can ever give another item.

        Amortised O(1): only exhausted jobs at the front are dropped; a job
        there that is not exhausted already answers "not idle".  (A full scan
        per loop turn made thousands of pending submits quadratic.)
        """
        self._drop_exhausted_front()
        return not self._jobs and not self._requeued

    def next_chunk(
        self, limit: int | None, prefetch: bool, timed_ok: bool = True, behind: Job | None = None
    ) -> tuple[Job, int, list[object]] | None:
        """The next chunk to send, or None if no job has an item now.

        ``limit`` caps its size (a worker close to its task quota); with
        ``prefetch`` only jobs with items short enough to queue are considered
        (``behind``: the job of the chunk the worker runs now).
        """
        # A re-queued chunk of a job that has ended (failed, cancelled,
        # aborted) would run for nobody: drop it.
        while self._requeued and self._requeued[0][0].done():
            self._requeued.popleft()
        if self._requeued:
            job, start, items = self._requeued[0]
            if (not prefetch or self.can_prefetch(job, behind)) and (
                timed_ok or job.policy.timeout is None
            ):
                self._requeued.popleft()
                if limit is not None and len(items) > limit:  # a worker's task quota
                    self._requeued.appendleft((job, start + limit, items[limit:]))
                    items = items[:limit]
                return job, start, items
        # A prefetch looks at a few jobs only: thousands of single calls (which
        # never prefetch) would otherwise be scanned for every busy worker.
        looks = min(len(self._jobs), PREFETCH_LOOKS if prefetch else len(self._jobs))
        for _ in range(looks):
            if not self._jobs:  # every job looked at has left the queue
                break
            job = self._jobs[0]
            if (prefetch and not self.can_prefetch(job, behind)) or (
                not timed_ok and job.policy.timeout is not None  # timed: ready workers only
            ):
                self._jobs.rotate(-1)
                continue
            size = self.chunk_size(job)
            taken = job.take(size if limit is None else min(size, limit))
            if job.exhausted():  # leaves the queue now, not at a later scan
                self._jobs.popleft()
                self.forget(job)
            else:
                self._jobs.rotate(-1)
            if taken is not None:
                return job, taken[0], taken[1]
        self._drop_exhausted_front()
        return None

    def chunk_size(self, job: Job) -> int:
        """Items for the next chunk of ``job`` (its fixed chunksize, else adaptive)."""
        per_item = self.per_item(job.key)
        item_bytes = self._sizes.get(job.key)
        if per_item is not None and item_bytes:
            # Items whose size is measured only (pickled for their worker): a
            # lazy map's window grows with this rate, and its bytes stay within
            # four chunks' bytes a worker, as the chunk term's do.
            rate = self.parallel / per_item if per_item > 0 else math.inf
            job.rate_hint = min(rate, 4 * self.workers * CHUNK_BYTES / item_bytes)
        if job.policy.timeout is not None:
            return 1  # a timeout is per task: each runs alone, its start time known
        if job.chunksize is not None:
            return job.chunksize
        last = self._last_size.get(id(job), 0)
        if per_item is None:
            size = 1
        else:
            ideal = self._aim(job) / per_item if per_item > 0 else math.inf
            # A job's first chunk trusts what earlier jobs of the function
            # measured; later ones grow at most GROWTH-fold per step.
            size = int(min(ideal, last * GROWTH)) if last else int(min(ideal, 1 << 20))
        if job.remaining is not None:
            tapered = self._share(job, job.remaining)
            if tapered <= size * STEADY_STRETCH and self._even_rounds(job):
                size = tapered  # the last round, in even shares (see STEADY_STRETCH)
            # Tapering balances the end of a job; below TAPER_FLOOR_SECONDS of
            # work a chunk is too small to unbalance anything but still costs
            # a round trip, so tiny tasks stop tapering there.
            floor_seconds = max(TAPER_FLOOR_SECONDS, 2 * self.overhead)
            floor = int(floor_seconds / per_item) if per_item else 1
            size = min(size, max(tapered, floor))
        if item_bytes:
            size = min(size, int(CHUNK_BYTES / item_bytes))
        size = max(1, size, self.min_chunk)
        self._last_size[id(job)] = size
        job.chunk_hint = size
        return size

    def _aim(self, job: Job) -> float:
        """Seconds a chunk of ``job`` aims to compute: longer for a steady, finite job.

        Its items end when expected and the taper evens out its last chunks,
        so a longer chunk unbalances nothing; each round trip it saves is time
        taken from the work when the workers fill the cores.  A lazy job keeps
        the target: its end is unknown, and its read-ahead window grows with
        its chunks.
        """
        if job.remaining is not None and self.steady(job.key):
            return max(self.target, STEADY_TARGET_SECONDS)
        return self.target

    def _share(self, job: Job, remaining: int) -> int:
        """The most items the next chunk of a finite ``job`` may take (the taper).

        In general ``remaining / (TAPER * workers)``, recomputed per chunk.  A
        steady function on many workers (see STEADY_TAPER) gets even shares,
        computed once per round of ``workers`` chunks (factoring): recomputed
        per chunk, the first chunks of a round would be larger than the last.
        """
        if not self._even_rounds(job):
            self._rounds.pop(id(job), None)
            return math.ceil(remaining / (TAPER * self.parallel))
        share, left = self._rounds.get(id(job), (0, 0))
        if left <= 0:
            share, left = math.ceil(remaining / (STEADY_TAPER * self.parallel)), self.parallel
        self._rounds[id(job)] = (share, left - 1)
        return share

    def _even_rounds(self, job: Job) -> bool:
        """True if ``job``'s chunks are even shares per round (steady, many workers)."""
        many_workers = self.workers * CHUNK_SECONDS_PER_WORKER > TARGET_CHUNK_SECONDS
        return many_workers and self.steady(job.key)

    def can_prefetch(self, job: Job, behind: Job | None = None) -> bool:
        """True if a chunk of ``job`` may be queued behind a busy worker's current one.

        ``behind`` is the job of that current chunk, if known: the last items
        of a steady job are queued only behind a chunk of the same job.
        """
        estimate = self._estimates.get(job.key)
        if (
            estimate is None
            or estimate.per_item > PREFETCH_MAX_SECONDS
            or job.policy.timeout is not None
        ):
            return False
        if job.remaining is None or job.remaining > PREFETCH_TAIL * self.workers:
            return True
        # The tail: queued only behind a chunk of this same job, if its items
        # take as long as expected and are shorter than the chunk target.  The
        # taper has made that chunk short (a few items, or under
        # TAPER_FLOOR_SECONDS of work), so the queued item waits at most about
        # that long, where a free worker might have taken it sooner; the target
        # bounds that loss, and grows with the number of workers as the
        # master's queue of round trips does when they finish together.  Behind
        # another job's chunk (of unknown length) it could wait far longer.
        return (
            behind is job and estimate.spread < STEADY_SPREAD and estimate.per_item <= self.target
        )

    def per_item(self, key: Hashable) -> float | None:
        """Learned seconds per item of ``key``'s function, or None if unknown."""
        estimate = self._estimates.get(key)
        return None if estimate is None else estimate.per_item

    def steady(self, key: Hashable) -> bool:
        """True if the durations of ``key``'s items hardly vary (see STEADY_SPREAD)."""
        estimate = self._estimates.get(key)
        return estimate is not None and estimate.spread < STEADY_SPREAD

    def record(self, key: Hashable, items: int, seconds: float) -> None:
        """Learn from a finished chunk of ``items`` items that computed ``seconds``."""
        if items <= 0:
            return
        sample = seconds / items
        estimate = self._estimates.pop(key, None)
        if estimate is None:
            estimate = _Estimate(sample)
        else:
            estimate.add(sample)
        self._estimates[key] = estimate  # most recently used last
        if len(self._estimates) > MAX_ESTIMATES:
            self._estimates.popitem(last=False)

    def record_size(self, key: Hashable, items: int, nbytes: int) -> None:
        """Learn how many pickled bytes an item of ``key`` takes (0: not pickled)."""
        if nbytes and items:
            if len(self._sizes) > MAX_ESTIMATES:
                self._sizes.clear()
            self._sizes[key] = nbytes / items

    def forget(self, job: Job) -> None:
        """Drop per-job state once the job has left the queue."""
        self._last_size.pop(id(job), None)
        self._rounds.pop(id(job), None)

    def _drop_exhausted_front(self) -> None:
        while self._jobs and self._jobs[0].exhausted():
            self.forget(self._jobs.popleft())
