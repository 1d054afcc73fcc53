/*
 * nb-micro: NestBench's built-in microbenchmarks (run on the measured machine or guest).
 *
 *   nb-micro random     --size BYTES --ops N [--thp huge|nohuge|default] [--seed S] [--progress SECONDS]
 *   nb-micro sequential --size BYTES --ops N [--thp ...] [--progress SECONDS]
 *   nb-micro compute    --ops N
 *
 * random: the xGemini paper's Fig. 7 benchmark. A 2 MiB-aligned buffer of BYTES is optionally
 * madvise'd (MADV_HUGEPAGE / MADV_NOHUGEPAGE), touched page by page, then N read-modify-writes
 * of 8 bytes at uniformly random 8-byte-aligned offsets. TLB reach decides its speed.
 * sequential: the same buffer walked in order (TLB-insensitive control).
 * compute: an arithmetic loop that touches no memory (overhead control).
 *
 * Output, one line each, for the NestBench runner:
 *   metric NAME VALUE UNIT POLARITY        POLARITY is higher, lower or neutral
 *   info NAME VALUE
 *   progress T OPS DT                   with --progress: every SECONDS of the timed loop, the
 *                                       seconds since it began (T, CLOCK_MONOTONIC at the
 *                                       interval's end), the operations done in the interval and
 *                                       its length (DT); for throughput over time (a VM saved and
 *                                       restored under it, a host swapping); before the first,
 *                                       "info progress_clock_start C": CLOCK_MONOTONIC at the
 *                                       start of the timed loop (seconds), to place the lines on
 *                                       the clock of the agent that runs it
 * With NB_PHASE_STOP=1 in the environment, random and sequential stop themselves (SIGSTOP) right
 * after the measured phase, with the buffer still mapped, until the runner's alignment probe has
 * read their page tables and sent SIGCONT (the stop is outside the timed loop).
 * Exit status 0 on success, 2 on bad arguments, 1 on a system failure (with a message on stderr).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define HUGE_2M (2UL << 20)

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int parse_size(const char *text, uint64_t *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (errno != 0 || end == text || v < 0) return -1;
    uint64_t mult = 1;
    if (*end != '\0') {
        switch (*end) {
        case 'k': case 'K': mult = 1UL << 10; break;
        case 'm': case 'M': mult = 1UL << 20; break;
        case 'g': case 'G': mult = 1UL << 30; break;
        case 't': case 'T': mult = 1UL << 40; break;
        default: return -1;
        }
        end++;
        if (*end == 'i' || *end == 'I') end++;
        if (*end == 'b' || *end == 'B') end++;
        if (*end != '\0') return -1;
    }
    *out = (uint64_t)(v * (double)mult);
    return 0;
}

/* AnonHugePages of this process, in bytes, from /proc/self/smaps_rollup; -1 if unreadable. */
static long long anon_huge_bytes(void) {
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    if (!f) return -1;
    char line[256];
    long long kb = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "AnonHugePages:", 14) == 0) {
            kb = strtoll(line + 14, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/* xorshift64* (Vigna 2016): fast, good enough to defeat prefetchers. */
static inline uint64_t next_random(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void usage(void) {
    fprintf(stderr, "usage: nb-micro random|sequential|compute --size BYTES --ops N "
                    "[--thp huge|nohuge|default] [--seed S] [--progress SECONDS]\n");
}

static uint64_t *map_buffer(uint64_t size, const char *thp) {
    /* Over-allocate by 2 MiB and align, so huge pages can back the whole buffer. */
    size_t length = size + HUGE_2M;
    char *raw = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
        fprintf(stderr, "nb-micro: mmap of %" PRIu64 " bytes failed: %s\n", size, strerror(errno));
        return NULL;
    }
    uintptr_t aligned = ((uintptr_t)raw + HUGE_2M - 1) & ~(HUGE_2M - 1);
    int advice = -1;
    if (strcmp(thp, "huge") == 0) advice = MADV_HUGEPAGE;
    if (strcmp(thp, "nohuge") == 0) advice = MADV_NOHUGEPAGE;
    if (advice >= 0 && madvise((void *)aligned, size, advice) != 0) {
        fprintf(stderr, "nb-micro: madvise failed: %s\n", strerror(errno));
        return NULL;
    }
    return (uint64_t *)aligned;
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(); return 2; }
    const char *mode = argv[1];
    uint64_t size = 1UL << 30, ops = 10000000, seed = 0x9E3779B97F4A7C15ULL;
    const char *thp = "default";
    double progress = 0;
    for (int i = 2; i < argc; i++) {
        if (i + 1 >= argc) { usage(); return 2; }
        const char *key = argv[i], *value = argv[++i];
        if (strcmp(key, "--size") == 0) {
            if (parse_size(value, &size) != 0 || size < 4096) {
                fprintf(stderr, "nb-micro: --size: invalid size \"%s\" (at least 4096 bytes)\n", value);
                return 2;
            }
        } else if (strcmp(key, "--ops") == 0) {
            if (parse_size(value, &ops) != 0 || ops == 0) {
                fprintf(stderr, "nb-micro: --ops: invalid count \"%s\"\n", value);
                return 2;
            }
        } else if (strcmp(key, "--thp") == 0) {
            if (strcmp(value, "huge") && strcmp(value, "nohuge") && strcmp(value, "default")) {
                fprintf(stderr, "nb-micro: --thp: \"%s\" is not huge, nohuge or default\n", value);
                return 2;
            }
            thp = value;
        } else if (strcmp(key, "--progress") == 0) {
            char *end = NULL;
            progress = strtod(value, &end);
            if (end == value || *end != '\0' || !(progress >= 0) || progress > 3600) {
                fprintf(stderr, "nb-micro: --progress: invalid interval \"%s\" (seconds, 0 = off)\n", value);
                return 2;
            }
        } else if (strcmp(key, "--seed") == 0) {
            seed = strtoull(value, NULL, 0);
            if (seed == 0) seed = 1;
        } else {
            fprintf(stderr, "nb-micro: unknown option %s\n", key);
            usage();
            return 2;
        }
    }

    if (strcmp(mode, "compute") == 0) {
        double t0 = now_seconds();
        uint64_t s = seed, acc = 0;
        for (uint64_t i = 0; i < ops; i++) acc += next_random(&s) >> 7;
        double t = now_seconds() - t0;
        printf("metric ops_per_sec %.6g ops/s higher\n", (double)ops / t);
        printf("metric ns_per_op %.6g ns lower\n", t * 1e9 / (double)ops);
        printf("info checksum %" PRIu64 "\n", acc);
        return 0;
    }
    if (strcmp(mode, "random") != 0 && strcmp(mode, "sequential") != 0) { usage(); return 2; }

    size &= ~(uint64_t)7;
    uint64_t *buf = map_buffer(size, thp);
    if (!buf) return 1;
    uint64_t words = size / 8;

    double t0 = now_seconds();
    for (uint64_t i = 0; i < words; i += 4096 / 8) buf[i] = i;
    double touch = now_seconds() - t0;

    uint64_t s = seed, acc = 0, idx = 0;
    int random_mode = strcmp(mode, "random") == 0;
    /* Without --progress one chunk is the whole loop; with it, the clock is read between chunks
     * of 65536 operations (microseconds each), never inside them. */
    uint64_t chunk = progress > 0 ? 65536 : ops;
    double t1 = now_seconds(), last = t1;
    uint64_t last_ops = 0;
    if (progress > 0) {
        printf("info progress_clock_start %.6f\n", t1);
        fflush(stdout);
    }
    for (uint64_t done = 0; done < ops;) {
        uint64_t end = ops - done < chunk ? ops : done + chunk;
        if (random_mode) {
            for (uint64_t i = done; i < end; i++) {
                uint64_t k = next_random(&s) % words;
                buf[k] += i;
            }
        } else {
            for (uint64_t i = done; i < end; i++) {
                buf[idx] += i;
                if (++idx == words) idx = 0;
            }
        }
        done = end;
        if (progress > 0) {
            double now = now_seconds();
            if (now - last >= progress || done == ops) {
                printf("progress %.6f %" PRIu64 " %.6f\n", now - t1, done - last_ops, now - last);
                fflush(stdout);
                last = now;
                last_ops = done;
            }
        }
    }
    double t = now_seconds() - t1;
    const char *phase_stop = getenv("NB_PHASE_STOP");
    int stopped = phase_stop != NULL && strcmp(phase_stop, "1") == 0;
    if (stopped) raise(SIGSTOP);
    for (uint64_t i = 0; i < words; i += 4096 / 8) acc += buf[i];
    long long huge = anon_huge_bytes();

    printf("metric ops_per_sec %.6g ops/s higher\n", (double)ops / t);
    printf("metric ns_per_op %.6g ns lower\n", t * 1e9 / (double)ops);
    printf("metric touch_seconds %.6g s lower\n", touch);
    if (huge >= 0) printf("metric anon_huge_bytes %lld bytes neutral\n", huge);
    printf("info buffer_bytes %" PRIu64 "\n", size);
    printf("info checksum %" PRIu64 "\n", acc);
    if (stopped) printf("info phase_stop 1\n");
    return 0;
}
