/*
 * progress.h - progress of a long operation (repair, gc, rebalance) for a person
 * or a program.
 *
 * On a terminal: one bar redrawn in place with counts, bytes, rate and ETA.
 * With json: one JSON object per line ({"op","phase","done","total","bytes",
 * "total_bytes","elapsed_s","eta_s"} and {"op","event"} notes), at most one
 * progress line a second plus the last. Otherwise (a log file): a plain line
 * at most every ten seconds. Thread-safe: copies may run in parallel.
 */
#ifndef CORE_PROGRESS_H
#define CORE_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct progress;

/* progress_new reports the operation op ("repair", "gc") on f (usually stderr). */
struct progress *progress_new(const char *op, bool json, FILE *f);

/* progress_free ends the bar (a newline on a terminal) and frees p; NULL is fine. */
void progress_free(struct progress *p);

/*
 * progress_phase starts a phase ("listing", "copying") with its totals (0:
 * unknown, then no ETA) and zeroes the counts.
 */
void progress_phase(struct progress *p, const char *phase, uint64_t total, uint64_t total_bytes);

/* progress_add counts items and bytes done in the phase; redraws when it is time. */
void progress_add(struct progress *p, uint64_t items, uint64_t bytes);

/* progress_note reports one event (a failure, a decision) on its own line. */
void progress_note(struct progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* progress_flush draws the current state now (the end of a phase). */
void progress_flush(struct progress *p);

#endif
