#ifndef NB_LATS_H
#define NB_LATS_H

#include <stddef.h>
#include <stdint.h>

/// The scan of Tailbench lats.bin records (queue, service, sojourn: three little-endian uint64
/// per record) against three value brackets per column, one per wanted percentile. It lives in
/// C so that the loop is vectorised with AVX2 where the CPU has it (chosen at run time) and
/// stays branch free everywhere: Swift's optimiser turned the counters into unpredictable
/// branches. Every value must be below 2^62 (the caller checks the maxima and otherwise takes
/// its exact 128-bit path).
typedef struct {
    uint64_t lo[3][3]; /* [column][bracket]: bracket = [lo, hi], inclusive */
    uint64_t hi[3][3];
    /* Per column and bracket: values equal to lo are counted (equal) rather than collected; for a
     * value the sample shows repeated often, such as the zeros of an idle queue. */
    int count_equal[3][3];
} nb_lats_bounds;

typedef struct {
    uint64_t bits;   /* OR of every value: the counts are exact only if bits < 2^62 (the caller checks) */
    uint64_t sum[3]; /* wrapping; exact while max * records < 2^64 (the caller checks) */
    uint64_t max[3];
    uint64_t below[3][3]; /* values < lo */
    uint64_t equal[3][3]; /* values == lo (count_equal brackets only; otherwise collected) */
    /* Values in the bracket (those in (lo, hi] for count_equal brackets), appended to buffers the
     * caller owns. */
    uint64_t *inner[3][3];
    size_t count[3][3];
    size_t capacity[3][3];
    int overflowed; /* a buffer was full: the caller must take its other path */
} nb_lats_tally;

/// Adds `records` records at `words` to `tally`. Uses AVX2 when the CPU has it, unless
/// `scalar_only`.
void nb_lats_scan(const uint64_t *words, size_t records, const nb_lats_bounds *bounds, nb_lats_tally *tally,
                  int scalar_only);

/// 1 when nb_lats_scan uses AVX2 on this CPU.
int nb_lats_vectorised(void);

#endif
